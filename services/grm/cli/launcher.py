"""Child processes that bind a port: the one launcher for `grm up`, the benchmarks and tests.

A child is `python -m ...` with `--port-file FILE` appended: it binds its port (0 = any free
one) and writes the number there once listening (grm.rpc.server.write_port_file, atomically).
The launcher waits for that file (or the child's exit), optionally for its gRPC health to turn
SERVING, and stops it with SIGTERM (the service drains), then SIGKILL after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from grm.rpc.security import ClientSecurity
from grm.rpc.server import wait_serving

log = logging.getLogger(__name__)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: SIGTERM the child if its parent dies, so no model process is orphaned."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ChildProcess:
    """One child process reporting its port through a file in `workdir`.

    `log_to_file`: stdout and stderr go to `workdir/<name>.log` (else they are inherited).
    `own_session`: the child does not get the terminal's Ctrl-C (its parent stops it in
    order) and is SIGTERMed if the parent dies.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        workdir: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        log_to_file: bool = True,
        own_session: bool = False,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.port_file = workdir / f"{name}.port"
        self.log_path = workdir / f"{name}.log"
        self.env = env
        self.cwd = cwd
        self.log_to_file = log_to_file
        self.own_session = own_session
        self.port = 0
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def log(self, tail: int = 3000) -> str:
        """The end of the child's log file ('' when it logs to the terminal)."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-tail:]

    async def spawn(self, extra: Sequence[str] = ()) -> None:
        """Start the child (`extra` flags after its argv); returns at once."""
        self.port_file.unlink(missing_ok=True)
        argv = [sys.executable, *self.argv, *extra, "--port-file", str(self.port_file)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(self.env or {})}
        linux = sys.platform.startswith("linux")
        out: int | None = None
        if self.log_to_file:
            out = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=self.cwd,
                env=env,
                stdout=out,
                stderr=out,
                start_new_session=self.own_session,
                preexec_fn=_die_with_parent if self.own_session and linux else None,
            )
        finally:
            if out is not None:
                os.close(out)
        log.info("started %s (pid %d)", self.name, self.proc.pid)

    async def wait_port(self, within_s: float) -> int:
        """The port the child bound, once its port file appears; raises if it exits first."""
        assert self.proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while True:
            text = self.port_file.read_text().strip() if self.port_file.exists() else ""
            if text:
                self.port = int(text)
                return self.port
            if self.proc.returncode is not None:
                raise RuntimeError(
                    f"{self.name} exited with code {self.proc.returncode}\n{self.log()}".rstrip()
                )
            if loop.time() > deadline:
                raise TimeoutError(f"{self.name} did not bind a port within {within_s:.0f}s")
            await asyncio.sleep(0.05)

    async def wait_serving(
        self, host: str, within_s: float, security: ClientSecurity | None = None
    ) -> None:
        """Until the child's gRPC health is SERVING; raises if it exits or time runs out."""
        assert self.proc is not None
        waiter = asyncio.ensure_future(
            wait_serving(f"{host}:{self.port}", within_s=within_s, security=security)
        )
        exited = asyncio.ensure_future(self.proc.wait())
        try:
            await asyncio.wait({waiter, exited}, return_when=asyncio.FIRST_COMPLETED)
            if not waiter.done():
                raise RuntimeError(
                    f"{self.name} exited with code {self.proc.returncode}\n{self.log()}".rstrip()
                )
            waiter.result()
        finally:
            for task in (waiter, exited):
                task.cancel()
            await asyncio.gather(waiter, exited, return_exceptions=True)

    async def stop(self, grace_s: float = 30.0) -> int | None:
        """SIGTERM (the service drains) and wait; SIGKILL after `grace_s`. The exit code."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), grace_s)
            except TimeoutError:
                log.warning("%s did not stop in time; killing it", self.name)
                await self.kill()
        return self.proc.returncode

    async def kill(self) -> None:
        """SIGKILL: no drain; the port closes at once."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


async def stop_all(children: Sequence[ChildProcess], grace_s: float) -> None:
    """Stop children one after the other, in the given order (front door first)."""
    for child in children:
        await child.stop(grace_s)
