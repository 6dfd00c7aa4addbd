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
