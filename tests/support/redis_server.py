"""A real `redis-server` on a free 127.0.0.1 port, for tests (real servers on free ports).

The server keeps nothing on disk (no RDB, no AOF) and can be killed, paused (SIGSTOP: a hung
Redis) and restarted on the same port, which is what the failure tests need.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import redis

BINARY = "redis-server"


def redis_binary() -> str:
    """The redis-server path; skips the test where it is truly absent (fails under CI)."""
    found = shutil.which(BINARY)
    if found is None:
        message = f"{BINARY} is not installed (scripts/dev.sh setup installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process; `url` carries the password (AUTH) when one is set."""

    def __init__(
        self,
        *,
        password: str | None = "test-password",
        port: int | None = None,
        tls: tuple[Path, Path] | None = None,  # (certificate, key): serve TLS only
    ) -> None:
        self.binary = redis_binary()
        self.password = password
        self.port = port or 0
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="grm-redis-")

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        auth = f":{self.password}@" if self.password else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    def _args(self) -> list[str]:
        args = [self.binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", self._dir.name, "--loglevel", "warning", "--daemonize", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        if self.tls:
            cert, key = (str(p) for p in self.tls)
            args += ["--port", "0", "--tls-port", str(self.port)]
            args += ["--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", cert]
            args += ["--tls-auth-clients", "no"]
        else:
            args += ["--port", str(self.port)]
        return args

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start (on the same port when restarting) and wait until it answers PING."""
        pick = self.port == 0
        for _ in range(5):
            if pick:
                self.port = free_port()
            self.proc = subprocess.Popen(
                self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            if self._wait_ready(timeout):
                return self
            err = self._reap()
            if not pick:
                break
        raise RuntimeError(f"redis-server did not start on port {self.port}: {err}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False  # exited: port taken or bad arguments
            if not self.tls:
                try:
                    client = redis.Redis(
                        host="127.0.0.1",
                        port=self.port,
                        password=self.password,
                        socket_timeout=0.5,
                        socket_connect_timeout=0.5,
                    )
                    with client:
                        if client.ping():
                            return True
                except redis.RedisError:
                    pass
            else:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                        return True
                except OSError:
                    pass
            time.sleep(0.02)
        return False

    def _reap(self) -> str:
        if self.proc is None:
            return ""
        if self.proc.poll() is None:
            self.proc.kill()
        _, err = self.proc.communicate(timeout=10)
        self.proc = None
        return err.decode(errors="replace")[-500:]

    def kill(self) -> None:
        """Crash it (SIGKILL): in-memory data is gone, the port closes at once."""
        if self.proc is not None:
            self.resume()
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def pause(self) -> None:
        """Freeze it (SIGSTOP): connections stay open but nothing answers — a hung Redis."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Shut it down and remove its directory."""
        if self.proc is not None:
            self.resume()
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None
        self._dir.cleanup()

    def client(self) -> redis.Redis:
        """A plain synchronous client, to look at what the cache wrote."""
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
