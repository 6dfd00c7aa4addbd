"""The lean HTTP/1.1 client against servers this repository did not write — aiohttp's (as the
dev engines serve), uvicorn's with h11 (what vLLM, SGLang and llama-cpp-python serve with),
the standard library's `http.server` — and against raw sockets that misbehave on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.server
import json
import shutil
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import uvloop
from aiohttp import web

from grm.backends.http1 import HttpClient, HttpConnectionError
from tests.support.certs import make_ca, make_leaf
from tests.support.polling import eventually

BIG = b"x" * (3 * 1024 * 1024 + 7)  # several reads' worth, odd length


# ---------------------------------------------------------------- aiohttp's server


def _aiohttp_app(peers: list[Any]) -> web.Application:
    async def echo(request: web.Request) -> web.StreamResponse:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        body = await request.read()
        return web.json_response(
            {
                "path": request.path,
                "body": body.decode(),
                "auth": request.headers.get("Authorization", ""),
                "type": request.headers.get("Content-Type", ""),
            }
        )

    async def chunked(request: web.Request) -> web.StreamResponse:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        await request.read()
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for part in (b'{"parts": [', b'"a", ', b'"b"', b"]}"):
            await resp.write(part)
        await resp.write_eof()
        return resp

    async def big(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=BIG)

    async def close(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b"bye", headers={"Connection": "close"})

    async def no_content(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    async def error(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"error": "queue full"}, status=429)

    app = web.Application()
    app.router.add_post("/v1/echo", echo)
    app.router.add_post("/v1/chunked", chunked)
    app.router.add_post("/v1/big", big)
    app.router.add_post("/v1/close", close)
    app.router.add_post("/v1/empty", no_content)
    app.router.add_post("/v1/error", error)
    return app


@contextlib.asynccontextmanager
async def aiohttp_server(
    peers: list[Any], ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[int]:
    runner = web.AppRunner(_aiohttp_app(peers))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield port
    finally:
        await runner.cleanup()


async def test_json_replies_reuse_one_connection_and_carry_the_headers() -> None:
    peers: list[Any] = []
    async with aiohttp_server(peers) as port:
        with contextlib.closing(
            HttpClient(f"http://127.0.0.1:{port}/v1", headers={"Authorization": "Bearer t"})
        ) as client:
            for i in range(5):
                reply = await client.post("/echo", json.dumps({"i": i}).encode())
                assert reply.status == 200
                got = json.loads(reply.body)
                assert got == {
                    "path": "/v1/echo",
                    "body": json.dumps({"i": i}),
                    "auth": "Bearer t",
                    "type": "application/json",
                }
    assert len(peers) == 5 and len(set(peers)) == 1  # one kept-alive connection


async def test_concurrent_requests_each_get_their_own_reply() -> None:
    peers: list[Any] = []
    async with aiohttp_server(peers) as port:
        with contextlib.closing(HttpClient(f"http://127.0.0.1:{port}/v1")) as client:
            replies = await asyncio.gather(
                *(client.post("/echo", str(i).encode()) for i in range(20))
            )
            assert [json.loads(r.body)["body"] for r in replies] == [str(i) for i in range(20)]
            again = await asyncio.gather(*(client.post("/echo", b"x") for _ in range(20)))
            assert all(r.status == 200 for r in again)
    assert len(set(peers)) <= 20  # the second round reused the first round's connections


async def test_chunked_large_empty_and_error_replies() -> None:
    peers: list[Any] = []
    async with aiohttp_server(peers) as port:
        with contextlib.closing(HttpClient(f"http://127.0.0.1:{port}/v1")) as client:
            chunked = await client.post("/chunked", b"{}")
            assert json.loads(chunked.body) == {"parts": ["a", "b"]}
            big = await client.post("/big", b"{}")
            assert big.status == 200 and big.body == BIG
            empty = await client.post("/empty", b"{}")
            assert (empty.status, empty.body) == (204, b"")
            error = await client.post("/error", b"{}")
            assert error.status == 429 and json.loads(error.body) == {"error": "queue full"}
            after = await client.post("/echo", b"after")
            assert json.loads(after.body)["body"] == "after"
    assert len(set(peers)) == 1  # every framing left the connection reusable


async def test_a_connection_close_reply_is_not_reused() -> None:
    peers: list[Any] = []
    async with aiohttp_server(peers) as port:
        with contextlib.closing(HttpClient(f"http://127.0.0.1:{port}/v1")) as client:
            reply = await client.post("/close", b"{}")
            assert reply.body == b"bye" and client.idle == 0
            await client.post("/echo", b"1")
            await client.post("/echo", b"2")
            assert client.idle == 1
    assert len(set(peers)) == 1  # the two after the close shared a new connection


async def test_https_with_the_servers_ca(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make test certificates")
    make_ca(tmp_path, "ca")
    make_leaf(tmp_path, "server", "ca", "DNS:localhost,IP:127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    trusted = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    peers: list[Any] = []
    async with aiohttp_server(peers, server_ctx) as port:
        with contextlib.closing(
            HttpClient(f"https://127.0.0.1:{port}/v1", ssl_context=trusted)
        ) as client:
            for _ in range(2):
                reply = await client.post("/echo", b"secret")
                assert json.loads(reply.body)["body"] == "secret"
        with contextlib.closing(
            HttpClient(f"https://127.0.0.1:{port}/v1")
        ) as stranger:  # the system's CAs only
            with pytest.raises(HttpConnectionError, match="cannot connect"):
                await stranger.post("/echo", b"secret")
    assert len(set(peers)) == 1


# ---------------------------------------------------------------- uvicorn (h11)


async def _asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        event = await receive()
        body += event.get("body", b"")
        if not event.get("more_body"):
            break
    peer = list(scope.get("client") or ())
    if scope["path"] == "/v1/stream":  # no Content-Length: uvicorn frames it chunked
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"[", json.dumps(peer).encode(), b",", body, b"]"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    out = json.dumps({"peer": peer, "body": body.decode()}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": out})


@contextlib.asynccontextmanager
async def uvicorn_server(keep_alive_s: int) -> AsyncIterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        _asgi, http="h11", lifespan="off", log_level="warning", timeout_keep_alive=keep_alive_s
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await eventually(lambda: server.started, what="uvicorn started", within_s=30)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await task


async def test_uvicorn_content_length_and_chunked_replies_on_one_connection() -> None:
    async with uvicorn_server(keep_alive_s=30) as port:
        with contextlib.closing(HttpClient(f"http://127.0.0.1:{port}/v1")) as client:
            first = json.loads((await client.post("/plain", b"one")).body)
            streamed = json.loads((await client.post("/stream", b'"two"')).body)
            third = json.loads((await client.post("/plain", b"three")).body)
    assert first["body"] == "one" and third["body"] == "three"
    assert streamed[1] == "two"
    assert first["peer"] == streamed[0] == third["peer"]


async def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    # uvicorn closes a kept-alive connection after `timeout_keep_alive` idle seconds (vLLM and
    # SGLang run it with 5 s); the next request opens a new one, with no error.
    async with uvicorn_server(keep_alive_s=1) as port:
        with contextlib.closing(HttpClient(f"http://127.0.0.1:{port}/v1")) as client:
            first = json.loads((await client.post("/plain", b"1")).body)
            assert client.idle == 1
            # give-up bound only: uvicorn closes it after ~1 s
            await eventually(lambda: client.idle == 0, what="the idle close", within_s=30)
            second = json.loads((await client.post("/plain", b"2")).body)
    assert second["body"] == "2" and second["peer"] != first["peer"]
    assert client.resent == 0  # seen closed before use: nothing had to be sent again


# ---------------------------------------------------------------- the standard library's server


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        out = json.dumps({"body": body.decode(), "peer": list(self.client_address)}).encode()
        self.send_response(200)
        if self.path.endswith("/sized"):
            self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)  # HTTP/1.0: the body ends when the connection closes

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def stdlib_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


async def test_http_1_0_replies_with_and_without_a_length() -> None:
    with stdlib_server() as port:
        with contextlib.closing(HttpClient(f"http://127.0.0.1:{port}")) as client:
            sized = json.loads((await client.post("/sized", b"a")).body)
            unsized = json.loads((await client.post("/unsized", b"b" * 100_000)).body)
    assert sized["body"] == "a" and unsized["body"] == "b" * 100_000
    assert client.idle == 0  # HTTP/1.0 without keep-alive: never reused


# ---------------------------------------------------------------- raw sockets


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[tuple[int, list[int]]]:
    """A socket server; `handler` gets each connection and its number (0, 1, ...)."""
    connections: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = len(connections)
        connections.append(n)
        try:
            await handler(reader, writer, n)
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], connections
    finally:
        server.close()


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    return await reader.readexactly(length)


def _ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


async def test_a_request_dropped_on_a_kept_alive_connection_is_sent_again_once() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        body = await _read_request(reader)
        writer.write(_ok(body))
        await writer.drain()
        if n == 0:
            await _read_request(reader)  # the second request on it: dropped unanswered
            return
        while True:
            body = await _read_request(reader)
            writer.write(_ok(body))
            await writer.drain()

    async with raw_server(handler) as (port, connections):
        with contextlib.closing(HttpClient(f"http://127.0.0.1:{port}")) as client:
            assert (await client.post("/", b"1")).body == b"1"
            assert (await client.post("/", b"2")).body == b"2"
    assert client.resent == 1 and connections == [0, 1]


async def test_a_request_dropped_on_a_new_connection_is_an_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await _read_request(reader)

    async with raw_server(handler) as (port, connections):
        with contextlib.closing(HttpClient(f"http://127.0.0.1:{port}")) as client:
            with pytest.raises(HttpConnectionError, match="closed the connection") as err:
                await client.post("/", b"1")
    assert err.value.before_reply and client.resent == 0 and connections == [0]


MALFORMED = [
    b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: nine\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # then the server closes
]


@pytest.mark.parametrize("reply", MALFORMED)
async def test_malformed_or_cut_replies_are_connection_errors(reply: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await _read_request(reader)
        writer.write(reply)
        await writer.drain()

    async with raw_server(handler) as (port, _):
        with contextlib.closing(HttpClient(f"http://127.0.0.1:{port}")) as client:
            with pytest.raises(HttpConnectionError):
                await client.post("/", b"{}")
    assert client.idle == 0


async def test_interim_replies_are_skipped_and_chunk_extensions_and_trailers_read() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await _read_request(reader)
        writer.write(
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n"
        )
        await writer.drain()
        await _read_request(reader)
        writer.write(_ok(b"next"))
        await writer.drain()

    async with raw_server(handler) as (port, connections):
        with contextlib.closing(HttpClient(f"http://127.0.0.1:{port}")) as client:
            assert (await client.post("/", b"{}")).body == b"abcde"
            assert (await client.post("/", b"{}")).body == b"next"
    assert connections == [0]


async def test_a_cancelled_or_timed_out_request_closes_its_connection() -> None:
    gone: list[asyncio.Event] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await _read_request(reader)
        event = asyncio.Event()
        gone.append(event)
        await reader.read()  # never answers; returns when the client closes the connection
        event.set()

    async with raw_server(handler) as (port, connections):
        with contextlib.closing(HttpClient(f"http://127.0.0.1:{port}")) as client:
            task = asyncio.create_task(client.post("/", b"{}"))
            await eventually(lambda: len(gone) == 1, what="the request arrived", within_s=30)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.wait_for(gone[0].wait(), 30)  # give-up bound: the close is immediate
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await client.post("/", b"{}")
            await asyncio.wait_for(gone[1].wait(), 30)
    assert connections == [0, 1] and client.idle == 0


async def test_connections_idle_for_the_keepalive_time_are_closed() -> None:
    arrived: list[int] = []
    ended: list[int] = []
    all_in = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        try:
            while True:
                body = await _read_request(reader)
                arrived.append(n)
                if len(arrived) == 3:
                    all_in.set()
                await all_in.wait()  # the first three requests each hold their connection
                writer.write(_ok(body))
                await writer.drain()
        except asyncio.IncompleteReadError:
            ended.append(n)  # the client closed it

    async with raw_server(handler) as (port, connections):
        with contextlib.closing(HttpClient(f"http://127.0.0.1:{port}", keepalive_s=0.3)) as client:
            await asyncio.gather(*(client.post("/", b"x") for _ in range(3)))
            assert client.idle == 3
            await client.post("/", b"y")  # one in use again: its idle time starts anew
            # give-up bound only: the reaper closes them ~0.3 s after their last use
            await eventually(
                lambda: sorted(ended) == [0, 1, 2], what="idle ones closed", within_s=30
            )
            assert client.idle == 0
            assert (await client.post("/", b"z")).body == b"z"  # a new connection
    assert connections == [0, 1, 2, 3]


async def test_refused_connections_and_bad_settings() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    client = HttpClient(f"http://127.0.0.1:{port}")
    with pytest.raises(HttpConnectionError, match="cannot connect"):
        await client.post("/", b"{}")
    with pytest.raises(ValueError, match="line break"):
        HttpClient("http://127.0.0.1:1", headers={"Authorization": "Bearer a\r\nX-Evil: 1"})
    with pytest.raises(ValueError, match="not an http"):
        HttpClient("unix:///tmp/engine.sock")
    closed = HttpClient(f"http://127.0.0.1:{port}")
    closed.close()
    with pytest.raises(HttpConnectionError, match="closed"):
        await closed.post("/", b"{}")


# ---------------------------------------------------------------- the same on uvloop


@pytest.mark.parametrize(
    "test",
    [
        test_json_replies_reuse_one_connection_and_carry_the_headers,
        test_concurrent_requests_each_get_their_own_reply,
        test_chunked_large_empty_and_error_replies,
        test_a_connection_close_reply_is_not_reused,
        test_uvicorn_content_length_and_chunked_replies_on_one_connection,
        test_a_connection_the_server_closed_while_idle_is_replaced,
        test_http_1_0_replies_with_and_without_a_length,
        test_a_request_dropped_on_a_kept_alive_connection_is_sent_again_once,
        test_a_request_dropped_on_a_new_connection_is_an_error,
        *(
            functools.partial(test_malformed_or_cut_replies_are_connection_errors, r)
            for r in MALFORMED
        ),
        test_interim_replies_are_skipped_and_chunk_extensions_and_trailers_read,
        test_a_cancelled_or_timed_out_request_closes_its_connection,
        test_connections_idle_for_the_keepalive_time_are_closed,
        test_refused_connections_and_bad_settings,
    ],
)
def test_on_uvloop(test: Callable[[], Awaitable[None]]) -> None:
    """The services run uvloop, whose transports signal EOF, close and report `is_closing`
    in their own way: every test above again, on it."""
    uvloop.run(test())


def test_https_on_uvloop(tmp_path: Path) -> None:
    uvloop.run(test_https_with_the_servers_ca(tmp_path))
