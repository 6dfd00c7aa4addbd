"""The event loop choice (grm.rpc.loop): uvloop when installed, asyncio on request."""

from __future__ import annotations

import asyncio

import pytest

from grm.rpc import loop


async def _name() -> str:
    return loop.loop_name(asyncio.get_running_loop())


def test_auto_runs_uvloop_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("uvloop")
    monkeypatch.delenv(loop.ENV, raising=False)
    assert loop.run(_name(), choice="auto") == "uvloop"
    assert loop.run(_name()) == "uvloop"  # the default is auto


def test_asyncio_on_request() -> None:
    assert loop.loop_factory("asyncio") is None
    assert loop.run(_name(), choice="asyncio") == "asyncio"


def test_environment_chooses_when_no_flag() -> None:
    assert loop.loop_factory(None, env={loop.ENV: "asyncio"}) is None
    assert loop.loop_factory("asyncio", env={loop.ENV: "uvloop"}) is None  # the flag wins


def test_unknown_choice_is_an_error() -> None:
    with pytest.raises(ValueError, match="GRM_EVENT_LOOP"):
        loop.loop_factory("trio")


def test_uvloop_required_but_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "uvloop", None)  # import fails
    assert loop.loop_factory("auto") is None
    with pytest.raises(RuntimeError, match="not installed"):
        loop.loop_factory("uvloop")


def test_settle_gc_freezes_start_up_objects_and_collects_less_often() -> None:
    import gc

    threshold = gc.get_threshold()
    try:
        loop.settle_gc()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == loop.GC_GEN0_THRESHOLD
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_service_grpc_defaults_turn_the_event_engine_off_unless_the_operator_chose(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    monkeypatch.delitem(
        sys.modules, "grpc", raising=False
    )  # as in a fresh `grm serve`, before any import
    env: dict[str, str] = {}
    assert loop.service_grpc_defaults(env) is True
    assert env == {loop.GRPC_EXPERIMENTS: "-event_engine_client,-event_engine_listener"}
    for chosen in ("", "event_engine_client"):  # set, even empty: gRPC's defaults or theirs
        env = {loop.GRPC_EXPERIMENTS: chosen}
        assert loop.service_grpc_defaults(env) is False
        assert env == {loop.GRPC_EXPERIMENTS: chosen}


def test_service_grpc_defaults_change_nothing_once_grpc_is_loaded() -> None:
    import grpc  # noqa: F401  (loaded: its core has read its configuration)

    env: dict[str, str] = {}
    assert loop.service_grpc_defaults(env) is False and env == {}


def test_grm_serve_sets_them_before_the_service_imports_grpc() -> None:
    import os
    import subprocess
    import sys

    script = """
import os, sys
from grm.rpc import loop
seen = []
real = loop.service_grpc_defaults
def spy():
    seen.append("grpc" in sys.modules)
    return real()
loop.service_grpc_defaults = spy
from grm.cli.main import main
try:
    main(["--event-loop", "asyncio", "serve", "sampler", "--backend", "tgi"])  # no --tgi-url
except SystemExit:
    pass
print(seen, os.environ.get("GRPC_EXPERIMENTS"), "grpc" in sys.modules)
"""
    env = {k: v for k, v in os.environ.items() if k != loop.GRPC_EXPERIMENTS}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.stdout.split() == [
        "[False]",  # called once, before grpc was loaded
        loop.SERVICE_GRPC_EXPERIMENTS,
        "True",  # the service's modules loaded it afterwards
    ], out.stderr
