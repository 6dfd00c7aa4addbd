"""What the engine stand-ins (`grm dev-tgi`, `grm dev-openai`) share: recording each exchange
for the contract tests, serving an aiohttp app while the engine loads behind it, and running
until a signal.

A state object of either server carries `settings.record`, `exchanges`, `ready` and `engine`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from grm.rpc.server import write_port_file

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Exchange:
    """One request/response pair as it crossed the wire (for the contract tests)."""

    method: str
    path: str
    request: Any  # parsed JSON body, or None
    status: int
    content_type: str
    response: Any  # parsed JSON body, or the text
    peer: str = ""  # client address:port — one per TCP connection


def recording(state_key: web.AppKey[Any]) -> Callable[[web.Request, Handler], Awaitable[Any]]:
    """A middleware that keeps each exchange, parsed, when the state's recording is on."""

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        state = request.app[state_key]
        if not state.settings.record:
            return await handler(request)
        raw = await request.read()
        response = await handler(request)
        body: Any = None
        if isinstance(response, web.Response) and response.body is not None:
            text = bytes(response.body).decode("utf-8", "replace")  # type: ignore[arg-type]
            try:
                body = json.loads(text) if response.content_type == "application/json" else text
            except ValueError:
                body = text
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode("utf-8", "replace")
        peer = request.transport.get_extra_info("peername") if request.transport else None
        state.exchanges.append(
            Exchange(
                request.method,
                request.path,
                parsed,
                response.status,
                response.content_type,
                body,
                peer=f"{peer[0]}:{peer[1]}" if peer else "",
            )
        )
        return response

    return record


@dataclass
class Served:
    """A dev server's app on its port, with the engine loading (or loaded) behind it."""

    root: str  # http://host:port
    port: int
    runner: web.AppRunner
    loader: asyncio.Task[None] | None

    async def close(self, state: Any) -> None:
        """Stop serving, then release the engine (model)."""
        if self.loader is not None:
            self.loader.cancel()
            await asyncio.gather(self.loader, return_exceptions=True)
        await self.runner.cleanup()
        await state.engine.close()


async def serve_app(
    app: web.Application, state: Any, *, host: str, port: int, wait_ready: bool
) -> Served:
    """Serve `app` on host:port (0 = a free port); the engine loads now, or in the background
    with `wait_ready=False` (the server answers "not ready" until then). A client that goes
    away cancels its request (handler_cancellation), as the real engines do."""
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    bound = runner.addresses[0][1]

    async def load() -> None:
        await state.engine.start()
        state.ready = True

    loader = None
    if wait_ready:
        await load()
    else:
        loader = asyncio.create_task(load())
    display = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return Served(f"http://{display}:{bound}", bound, runner, loader)


async def run_until_signal(
    name: str, served: Served, close: Callable[[], Awaitable[None]], port_file: str | None
) -> None:
    """Write the port file, serve until SIGINT/SIGTERM, then close; an engine that fails to
    load ends the server with an error instead of answering "not ready" forever."""
    if port_file:
        await asyncio.to_thread(write_port_file, port_file, served.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loader = served.loader
    if loader is not None:
        loader.add_done_callback(lambda t: t.cancelled() or t.exception() is None or stop.set())
    try:
        await stop.wait()
        if loader is not None and loader.done() and not loader.cancelled() and loader.exception():
            raise SystemExit(f"{name}: the engine did not start: {loader.exception()}")
    finally:
        await close()
