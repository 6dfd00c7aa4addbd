"""Real `grm serve ...` child processes on loopback, for the process-level reliability tests.

A service can be SIGKILLed, restarted on the same port, or sent SIGTERM, and its open file
descriptors and sockets are read from /proc, so a test can see leaked connections in a
process other than its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from grm.rpc.server import wait_serving
from tests.servers import ROOT, child_env


@dataclass(frozen=True)
class FdCount:
    """Open descriptors of a process, and how many of them are sockets."""

    total: int
    sockets: int


def open_fds(pid: int) -> FdCount:
    """Count /proc/<pid>/fd entries and those that point at a socket."""
    base = Path(f"/proc/{pid}/fd")
    total = sockets = 0
    for entry in os.listdir(base):
        try:
            target = os.readlink(base / entry)
        except FileNotFoundError:  # closed between the listing and the readlink
            continue
        total += 1
        sockets += target.startswith("socket:")
    return FdCount(total, sockets)


def rss_kib(pid: int) -> int:
    """Resident set size (VmRSS) of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def until(check: Callable[[], bool], *, within_s: float, interval: float = 0.05) -> bool:
    """Poll `check` until it holds or `within_s` passes; returns its last value."""
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() >= deadline:
            return check()
        await asyncio.sleep(interval)
    return True


class Service:
    """One `python -m grm.cli.main serve SERVICE ...` child with its port file and log."""

    def __init__(self, service: str, args: Sequence[str], tmp: Path, name: str) -> None:
        self.service = service
        self.args = list(args)
        self.name = name
        self.port_file = tmp / f"{name}.port"
        self.log_path = tmp / f"{name}.log"
        self.port = 0  # 0 until first started; restarts reuse the port
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self, tail: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:] if self.log_path.exists() else ""

    async def start(self, *, within_s: float = 30.0) -> Service:
        """Start (on the port of the last run, if any) and wait until health is SERVING."""
        self.port_file.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "grm.cli.main", "serve", self.service, *self.args]
        argv += ["--host", "127.0.0.1", "--port", str(self.port)]
        argv += ["--port-file", str(self.port_file), "--log-format", "text"]
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *argv, cwd=ROOT, env=child_env(), stdout=log, stderr=log
            )
        deadline = time.monotonic() + within_s
        while not self.port_file.exists() or not self.port_file.read_text().strip():
            if self.proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start:\n{self.log()}")
            await asyncio.sleep(0.05)
        self.port = int(self.port_file.read_text())
        await wait_serving(self.address, within_s=max(1.0, deadline - time.monotonic()))
        return self

    async def kill(self) -> None:
        """SIGKILL: no drain, no goodbye; the port closes at once."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    async def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM and wait (SIGKILL after `timeout_s`); returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout_s)
            except TimeoutError:
                await self.kill()
        return self.proc.returncode

    def fds(self) -> FdCount:
        return open_fds(self.pid)


@contextlib.asynccontextmanager
async def services(*started: Service) -> AsyncIterator[None]:
    """Stop every given service on the way out (whatever the test did to them)."""
    try:
        yield
    finally:
        for s in reversed(started):
            await s.stop()
