"""`--backend openai` settings: flags and GRM_* variables → BackendSettings → the backend."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from grm.backends.openai import OpenAiBackend
from grm.cli.up import UpSettings, backend_args
from grm.services.bootstrap import build_backend
from grm.services.sampler.main import add_arguments, build_settings


def settings(argv: list[str], env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return build_settings(parser.parse_args(argv), env or {})


def test_openai_flags_reach_the_backend(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("sk-engine-123\n")
    s = settings(
        [
            "--backend", "openai", "--openai-url", "http://a:8000/v1,http://b:8000/v1",
            "--engine", "SGLang", "--openai-api-key-file", str(key),
            "--openai-max-in-flight", "16",
        ]
    )  # fmt: skip
    assert s.backend.backend == "openai" and s.backend.engine == "sglang"
    assert s.backend.openai_url == ("http://a:8000/v1", "http://b:8000/v1")
    assert s.openai_api_key == "sk-engine-123" and "sk-engine" not in repr(s)
    backend = build_backend(s.backend, s.model, api_key=s.openai_api_key)
    assert isinstance(backend, OpenAiBackend)
    assert backend.settings.engine == "sglang" and backend.settings.max_in_flight == 16
    assert backend.pool.headers == {"Authorization": "Bearer sk-engine-123"}
    assert [e.url for e in backend.endpoints] == ["http://a:8000/v1", "http://b:8000/v1"]


def test_the_environment_configures_the_same_things() -> None:
    env = {
        "GRM_BACKEND": "openai",
        "GRM_OPENAI_URL": "http://vllm:8000/v1",
        "GRM_ENGINE": "vllm",
        "GRM_OPENAI_API_KEY": "k1",
    }
    s = settings([], env)
    assert (s.backend.backend, s.backend.engine, s.openai_api_key) == ("openai", "vllm", "k1")


def test_wrong_openai_settings_stop_the_service(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--openai-url"):
        settings(["--backend", "openai"])
    with pytest.raises(SystemExit, match="GRM_ENGINE"):
        settings(["--backend", "openai", "--openai-url", "http://x/v1"], {"GRM_ENGINE": "ollama"})
    with pytest.raises(SystemExit, match="--openai-api-key-file"):
        missing = str(tmp_path / "missing")
        settings(["--backend", "openai", "--openai-url", "x", "--openai-api-key-file", missing])


def test_grm_up_passes_the_openai_flags_to_its_children() -> None:
    up = UpSettings(backend="openai", openai_url="http://127.0.0.1:9/v1", engine="llamacpp")
    assert backend_args(up) == [
        "--backend", "openai", "--openai-url", "http://127.0.0.1:9/v1", "--engine", "llamacpp",
    ]  # fmt: skip


def test_prefix_locality_is_on_by_default_and_turns_off_by_flag_or_variable() -> None:
    tgi = ["--backend", "tgi", "--tgi-url", "http://a:80,http://b:80"]
    on = settings(tgi)
    assert build_backend(on.backend, on.model).pool.locality is True  # type: ignore[attr-defined]
    off = settings([*tgi, "--prefix-locality", "false"])
    assert build_backend(off.backend, off.model).pool.locality is False  # type: ignore[attr-defined]
    env = settings(
        ["--backend", "openai", "--openai-url", "http://a/v1"], {"GRM_PREFIX_LOCALITY": "0"}
    )
    backend = build_backend(env.backend, env.model)
    assert isinstance(backend, OpenAiBackend) and backend.pool.locality is False
