"""A lean HTTP/1.1 keep-alive client for the engine's generation requests.

Every sample is one POST to the engine, and the sampler's CPU per sample is what a large
training run pays sampler cores for. aiohttp's request path (URL objects, timers, cookie and
trace hooks, a writer per request) costs ~120 µs of client CPU per request on a 2-core host;
a request here is one buffer written on a kept-alive connection and a reply read by a small
parser: ~40 µs (`docs/benchmarks.md`). The control calls (health, /info, /v1/models,
/metrics) stay on aiohttp; only the hot path comes here.

What it speaks, and what the engines' servers need of it (TGI's axum/hyper, vLLM's and
SGLang's uvicorn, llama.cpp's cpp-httplib):

- a reply framed by `Content-Length`, by `Transfer-Encoding: chunked`, or (no length, no
  chunking) by the server closing the connection; 1xx interim replies are skipped;
- keep-alive: a connection goes back to the pool unless the reply says `Connection: close`,
  is HTTP/1.0 without `keep-alive`, or is framed by the close; a connection idle for
  `keepalive_s` is closed by a timer (a burst's connections do not stay open on an engine
  whose server keeps idle connections as long as the client does);
- a kept-alive connection the server closed while it was idle (uvicorn closes them after 5 s)
  can fail the next request before any byte of reply: that request is sent again, once, on a
  new connection (the reply was never started, so nothing is read twice);
- cancellation (the caller's deadline, a cancelled job) aborts the connection, so the engine
  sees the client go away and stops generating, as it does for aiohttp;
- `https://` URLs through the standard library's TLS (system trust store, or a given
  `ssl.SSLContext`).

Connection failures, resets and malformed replies raise `HttpConnectionError` (the endpoint
pool counts them as an outage of that endpoint, as it does aiohttp's `ClientError`).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 256 * 1024 * 1024  # far above any engine reply; a broken server is cut off


class HttpConnectionError(ConnectionError):
    """The request did not get a whole, well-formed reply (connect, reset, malformed)."""

    def __init__(self, message: str, *, before_reply: bool = False) -> None:
        super().__init__(message)
        self.before_reply = before_reply  # no byte of the reply had arrived


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes


_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _TRAILER, _UNTIL_CLOSE = range(6)


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[tuple[Reply, bool]] | None = None
        self._buf = bytearray()
        self._state = _HEAD
        self._status = 0
        self._keep = True
        self._need = 0
        self._chunks: list[bytes] = []
        self._received = False

    # ---------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            self.abort()  # bytes nobody asked for: the connection's framing is lost
            return
        self._received = True
        self._buf += data
        try:
            self._parse()
        except HttpConnectionError as exc:
            self._fail(exc)
            self.abort()

    def eof_received(self) -> bool:
        if self._state == _UNTIL_CLOSE and self._waiter is not None:
            self._finish(bytes(self._buf), keep=False)
        self.closed = True  # not reusable from now on (connection_lost follows)
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._state == _UNTIL_CLOSE and self._waiter is not None and exc is None:
            self._finish(bytes(self._buf), keep=False)
            return
        reason = f": {exc}" if exc else ""
        self._fail(
            HttpConnectionError(
                f"the server closed the connection before the whole reply{reason}",
                before_reply=not self._received,
            )
        )

    # ---------------------------------------------------------------- requests

    def send(self, data: bytes) -> asyncio.Future[tuple[Reply, bool]]:
        """Write one request; the future gives (reply, whether the connection is reusable)."""
        assert self.transport is not None and self._waiter is None
        self._waiter = asyncio.get_running_loop().create_future()
        self._state, self._keep, self._received = _HEAD, True, False
        self._chunks = []
        self.transport.write(data)
        return self._waiter

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _finish(self, body: bytes, *, keep: bool) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((Reply(self._status, body), keep and not self.closed))

    def _fail(self, exc: HttpConnectionError) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    # ---------------------------------------------------------------- parsing

    def _parse(self) -> None:
        buf = self._buf
        while self._waiter is not None:
            state = self._state
            if state == _HEAD:
                head = _cut(buf, b"\r\n\r\n", "the reply's header")
                if head is None:
                    return
                self._head(head)
            elif state == _BODY:
                if len(buf) < self._need:
                    return
                body = bytes(buf[: self._need])
                keep = self._keep and len(buf) == self._need  # extra bytes: framing is off
                buf.clear()
                self._finish(body, keep=keep)
            elif state == _CHUNK_SIZE:
                line = _cut(buf, b"\r\n", "a chunk size line")
                if line is None:
                    return
                size_text = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise HttpConnectionError(f"bad chunk size {size_text[:20]!r}") from None
                self._need = size
                self._state = _TRAILER if size == 0 else _CHUNK_DATA
                if sum(map(len, self._chunks)) + size > MAX_BODY_BYTES:
                    raise HttpConnectionError("the reply is too large")
            elif state == _CHUNK_DATA:
                if len(buf) < self._need + 2:
                    return
                if buf[self._need : self._need + 2] != b"\r\n":
                    raise HttpConnectionError("a chunk does not end with CRLF")
                self._chunks.append(bytes(buf[: self._need]))
                del buf[: self._need + 2]
                self._state = _CHUNK_SIZE
            elif state == _TRAILER:
                if buf[:2] == b"\r\n":
                    del buf[:2]
                elif _cut(buf, b"\r\n\r\n", "the reply's trailer") is None:
                    return
                keep = self._keep and not buf
                buf.clear()
                self._finish(b"".join(self._chunks), keep=keep)
            else:  # _UNTIL_CLOSE: the body ends when the server closes
                if len(buf) > MAX_BODY_BYTES:
                    raise HttpConnectionError("the reply is too large")
                return

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise HttpConnectionError(f"not an HTTP/1.x reply: {lines[0][:60]!r}")
        status = int(parts[1])
        if 100 <= status < 200:
            return  # an interim reply; the real one follows
        self._status = status
        self._keep = parts[0] != b"HTTP/1.0"
        length: int | None = None
        chunked = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    raise HttpConnectionError(f"bad Content-Length {value[:20]!r}") from None
            elif name == b"transfer-encoding":
                chunked = value.strip().lower().endswith(b"chunked")
            elif name == b"connection":
                tokens = value.lower()
                if b"close" in tokens:
                    self._keep = False
                elif b"keep-alive" in tokens:
                    self._keep = True
        if chunked:
            self._state = _CHUNK_SIZE
        elif status in (204, 304):
            self._state, self._need = _BODY, 0
        elif length is not None:
            if length < 0 or length > MAX_BODY_BYTES:
                raise HttpConnectionError(f"the reply's Content-Length {length} is out of range")
            self._state, self._need = _BODY, length
        else:
            self._state, self._keep = _UNTIL_CLOSE, False


def split_url(base_url: str) -> tuple[bool, str, int, str]:
    """(TLS, host, port, path prefix) of an http(s) URL; ValueError for anything else."""
    url = urlsplit(base_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"not an http(s) URL: {base_url!r}")
    tls = url.scheme == "https"
    return tls, url.hostname, url.port or (443 if tls else 80), url.path.rstrip("/")


def _cut(buf: bytearray, sep: bytes, what: str) -> bytes | None:
    """The bytes before `sep`, taken out of `buf` with it; None until `sep` has arrived
    (HttpConnectionError once `buf` holds more than a header may)."""
    end = buf.find(sep)
    if end < 0:
        if len(buf) > MAX_HEAD_BYTES:
            raise HttpConnectionError(f"{what} is too large")
        return None
    out = bytes(buf[:end])
    del buf[: end + len(sep)]
    return out


class HttpClient:
    """Kept-alive connections to one server (`base_url`, its path a prefix of every request);
    any number of requests at once (a connection each), `headers` sent with every one."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: dict[str, str] | None = None,
        keepalive_s: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        tls, self.host, self.port, self.prefix = split_url(base_url)
        self.keepalive_s = keepalive_s
        self._ssl: ssl.SSLContext | None = None
        if tls:
            self._ssl = ssl_context or ssl.create_default_context()
        host = f"[{self.host}]" if ":" in self.host else self.host
        default_port = self.port == (443 if tls else 80)
        fields = {
            "Host": host if default_port else f"{host}:{self.port}",
            "User-Agent": "grm-suite",
            "Accept": "application/json",
            **(headers or {}),
        }
        for name, value in fields.items():
            if any(c in f"{name}{value}" for c in "\r\n\0"):
                raise ValueError(f"header {name!r} holds a line break")
        self._fields = "".join(f"{k}: {v}\r\n" for k, v in fields.items()).encode("latin-1")
        self._idle: collections.deque[_Connection] = collections.deque()  # oldest first
        self._open: set[_Connection] = set()
        self._reaper: asyncio.TimerHandle | None = None
        self._closed = False
        self.resent = 0  # requests sent again after a kept-alive connection was found closed

    async def post(
        self, path: str, body: bytes, *, content_type: str = "application/json"
    ) -> Reply:
        """POST `body` to `prefix + path`. Bound it with `asyncio.timeout` (or cancel it):
        either aborts the connection."""
        head = (
            f"POST {self.prefix}{path} HTTP/1.1\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
        ).encode("latin-1")
        data = b"".join((head, self._fields, b"\r\n", body))
        for attempt in (0, 1):
            conn, reused = self._take()
            if conn is None:
                conn = await self._connect()
            try:
                reply, keep = await conn.send(data)
            except HttpConnectionError as exc:
                self._open.discard(conn)
                if reused and exc.before_reply and attempt == 0:
                    self.resent += 1
                    continue  # the server closed it while idle: once more on a new one
                raise
            except BaseException:  # cancelled or timed out: the engine sees us go
                self._open.discard(conn)
                conn.abort()
                raise
            if keep and not self._closed:
                conn.idle_since = time.monotonic()
                self._idle.append(conn)
                if self._reaper is None:
                    self._reaper = asyncio.get_running_loop().call_later(
                        self.keepalive_s, self._reap
                    )
            else:
                self._open.discard(conn)
                conn.abort()
            return reply
        raise AssertionError("unreachable")

    def _take(self) -> tuple[_Connection | None, bool]:
        cutoff = time.monotonic() - self.keepalive_s
        while self._idle:
            conn = self._idle.pop()  # the most recently used: least likely to be closed
            usable = not conn.closed and conn.transport is not None
            if usable and not conn.transport.is_closing() and conn.idle_since >= cutoff:
                return conn, True
            self._open.discard(conn)
            conn.abort()
        return None, False

    def _reap(self) -> None:
        """Close the connections idle for `keepalive_s` (the oldest are first in line)."""
        self._reaper = None
        now = time.monotonic()
        while self._idle and (
            self._idle[0].closed or self._idle[0].idle_since <= now - self.keepalive_s
        ):
            conn = self._idle.popleft()
            self._open.discard(conn)
            conn.abort()
        if self._idle and not self._closed:
            due = self._idle[0].idle_since + self.keepalive_s - now
            self._reaper = asyncio.get_running_loop().call_later(max(due, 0.0), self._reap)

    async def _connect(self) -> _Connection:
        if self._closed:
            raise HttpConnectionError("the client is closed", before_reply=True)
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(
                _Connection,
                self.host,
                self.port,
                ssl=self._ssl,
                server_hostname=self.host if self._ssl else None,
            )
        except (OSError, ssl.SSLError) as exc:
            where = f"{self.host}:{self.port}"
            raise HttpConnectionError(f"cannot connect to {where}: {exc}") from exc
        self._open.add(conn)
        return conn

    @property
    def idle(self) -> int:
        """Connections kept open for the next request."""
        return sum(1 for c in self._idle if not c.closed)

    def close(self) -> None:
        """Close every connection; requests in flight fail with HttpConnectionError."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for conn in list(self._open):
            conn.abort()
        self._open.clear()
        self._idle.clear()


__all__ = ["HttpClient", "HttpConnectionError", "Reply", "split_url"]
