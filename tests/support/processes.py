"""Real `grm serve ...` child processes on loopback, for the process-level reliability tests.

A service can be SIGKILLed, restarted on the same port, or sent SIGTERM, and its open file
descriptors and sockets are read from /proc, so a test can see leaked connections in a
process other than its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from grm.cli.launcher import ChildProcess
from grm_dev.procinfo import FdCount, open_fds, rss_kib
from tests.support.servers import ROOT, child_env

__all__ = ["FdCount", "Service", "open_fds", "rss_kib", "services", "until"]


async def until(check: Callable[[], bool], *, within_s: float, interval: float = 0.05) -> bool:
    """Poll `check` until it holds or `within_s` passes; returns its last value."""
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() >= deadline:
            return check()
        await asyncio.sleep(interval)
    return True


class Service(ChildProcess):
    """One `python -m grm.cli serve SERVICE ...` child with its port file and log.

    A restart binds the port of the last run, so its peers find it where it was.
    """

    def __init__(self, service: str, args: Sequence[str], tmp: Path, name: str) -> None:
        super().__init__(name, [], tmp, env=child_env(), cwd=ROOT)
        self.service = service
        self.args = list(args)  # a test may change them before a restart

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, *, within_s: float = 30.0) -> Service:
        """Start (on the port of the last run, if any) and wait until health is SERVING."""
        self.argv = ["-m", "grm.cli", "serve", self.service, *self.args, "--host", "127.0.0.1"]
        await self.spawn(["--port", str(self.port), "--log-format", "text"])
        deadline = time.monotonic() + within_s
        try:
            await self.wait_port(within_s)
            await self.wait_serving("127.0.0.1", max(1.0, deadline - time.monotonic()))
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{self.name} did not start: {exc}\n{self.log()}") from None
        return self

    async def stop(self, grace_s: float = 15.0) -> int | None:
        return await super().stop(grace_s)

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
