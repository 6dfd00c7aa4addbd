"""The chart's transport security: TLS / mutual TLS and the bearer token, off by default.

Rendered with the same pinned helm as tests/test_helm_chart.py; the rendered env of each
service is then parsed by the service's own settings code against a throwaway PKI standing
in for the mounted Secrets.
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.service.test_security import TOKEN
from tests.support.certs import make_ca, make_leaf
from tests.support.helm import (
    SERVICES,
    container,
    env_of,
    find,
    helm,
    kinds,
    load_docs,
    pod_spec,
    template,
    workloads,
)

SECURE = [
    "--set",
    ",".join(
        [
            "principles.enabled=true",
            "tls.enabled=true",
            "tls.secretName=grm-tls",
            "tls.mutual=true",
            "tls.serverName=grm.internal",
            "auth.enabled=true",
            "auth.secretName=grm-token",
            "auth.secretKey=api-token",
        ]
    ),
]
TLS_ENV = {"GRM_TLS_CERT", "GRM_TLS_KEY", "GRM_TLS_CLIENT_CA", "GRM_HEALTH_PORT"}
UPSTREAM_ENV = {
    "GRM_UPSTREAM_TLS_CA",
    "GRM_UPSTREAM_TLS_CERT",
    "GRM_UPSTREAM_TLS_KEY",
    "GRM_UPSTREAM_TLS_SERVER_NAME",
}


@pytest.fixture(scope="module")
def secure_docs() -> list[dict[str, Any]]:
    return load_docs(template("secure", *SECURE).stdout)


def grm_deployments(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        part: find(docs, "Deployment", part)
        for part in SERVICES
        if any(d["metadata"]["name"].endswith(f"-grm-{part}") for d in kinds(docs, "Deployment"))
    }


def test_security_is_off_by_default() -> None:
    docs = load_docs(template("plain", "--set", "principles.enabled=true").stdout)
    for part, doc in grm_deployments(docs).items():
        c = container(doc, part)
        env = env_of(c)
        assert not {n for n in env if n.startswith(("GRM_TLS", "GRM_UPSTREAM", "GRM_AUTH"))}
        assert "GRM_HEALTH_PORT" not in env
        assert not [m for m in c["volumeMounts"] if m["mountPath"].startswith("/etc/grm")]
        grpc_port = next(p["containerPort"] for p in c["ports"] if p["name"] == "grpc")
        assert c["readinessProbe"]["grpc"] == {"port": grpc_port}
    test_pod = find(docs, "Pod", "test-health")
    assert "--tls-ca" not in test_pod["spec"]["containers"][0]["args"]


def test_every_service_gets_tls_mtls_and_the_token(secure_docs: list[dict[str, Any]]) -> None:
    deployments = grm_deployments(secure_docs)
    assert set(deployments) == set(SERVICES)
    for part, doc in deployments.items():
        c = container(doc, part)
        env = env_of(c)
        assert TLS_ENV <= set(env), part
        assert env["GRM_AUTH_TOKEN_FILE"] == "/etc/grm/auth/token"
        assert (UPSTREAM_ENV <= set(env)) is (part == "aggregator"), part
        # The Secrets are mounted read-only where the env points.
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        assert mounts["/etc/grm/tls"]["readOnly"] is True
        assert mounts["/etc/grm/auth"]["readOnly"] is True
        volumes = {v["name"]: v for v in pod_spec(doc)["volumes"]}
        tls_volume = volumes[mounts["/etc/grm/tls"]["name"]]["secret"]
        assert tls_volume["secretName"] == "grm-tls"
        auth_volume = volumes[mounts["/etc/grm/auth"]["name"]]["secret"]
        assert auth_volume["secretName"] == "grm-token"
        assert auth_volume["items"] == [{"key": "api-token", "path": "token"}]
        for name, value in env.items():
            if isinstance(value, str) and value.startswith("/etc/grm/"):
                assert value.rsplit("/", 1)[0] in mounts, f"{part}: {name}={value} is not mounted"
        # Kubelet gRPC probes cannot speak TLS: they use the plaintext health port.
        health = next(p["containerPort"] for p in c["ports"] if p["name"] == "health")
        assert health == 8086 and env["GRM_HEALTH_PORT"] == "8086"
        assert c["readinessProbe"]["grpc"] == {"port": health}, part
        for probe in ("startupProbe", "livenessProbe"):
            assert c[probe]["grpc"] == {"port": health, "service": "liveness"}, f"{part} {probe}"
    agg_env = env_of(container(deployments["aggregator"], "aggregator"))
    assert agg_env["GRM_UPSTREAM_TLS_SERVER_NAME"] == "grm.internal"


def test_helm_test_pod_checks_health_over_mutual_tls(secure_docs: list[dict[str, Any]]) -> None:
    pod = find(secure_docs, "Pod", "test-health")
    c = pod["spec"]["containers"][0]
    args = c["args"]
    for flag, value in [
        ("--tls-ca", "/etc/grm/tls/ca.crt"),
        ("--tls-cert", "/etc/grm/tls/tls.crt"),
        ("--tls-key", "/etc/grm/tls/tls.key"),
        ("--tls-server-name", "grm.internal"),
    ]:
        assert args[args.index(flag) + 1] == value
    [mount] = [m for m in c["volumeMounts"] if m["mountPath"] == "/etc/grm/tls"]
    assert mount["readOnly"] is True


@pytest.mark.parametrize("version", ["1.30", "1.35"])
def test_secure_render_validates_strictly(secure_docs: list[dict[str, Any]], version: str) -> None:
    for doc in workloads(secure_docs):
        assert kubernetes_validate.validate(doc, version, strict=True) == version


def test_secure_values_lint_strict() -> None:
    result = helm("lint", "--strict", "charts/grm", *SECURE)
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("tls.enabled=true", "tls.secretName is required"),
        ("auth.enabled=true", "auth.secretName is required"),
        ("tls.enable=true", "enable"),
        ("tls.healthPort=0", "healthPort"),
        ("auth.secretKey=a/b", "secretKey"),
    ],
)
def test_incomplete_or_mistyped_security_values_fail(setting: str, complaint: str) -> None:
    result = template("bad", "--set", setting, check=False)
    assert result.returncode != 0, f"--set {setting} rendered"
    assert complaint in result.stderr, result.stderr


@pytest.fixture(scope="module")
def mounted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Rendered paths -> files standing in for the mounted Secrets."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make test certificates")
    d = tmp_path_factory.mktemp("secrets")
    make_ca(d, "ca")
    make_leaf(d, "server", "ca", "DNS:grm.internal")
    (d / "token").write_text(TOKEN + "\n", encoding="utf-8")
    return {
        "/etc/grm/tls/tls.crt": str(d / "server.pem"),
        "/etc/grm/tls/tls.key": str(d / "server.key"),
        "/etc/grm/tls/ca.crt": str(d / "ca.pem"),
        "/etc/grm/auth/token": str(d / "token"),
    }


def test_rendered_env_parses_with_the_services_own_settings(
    secure_docs: list[dict[str, Any]], mounted: dict[str, str]
) -> None:
    from grm.cli.main import build_parser

    for part, doc in grm_deployments(secure_docs).items():
        c = container(doc, part)
        module = importlib.import_module(SERVICES[part])
        known = {o.env for o in module.OPTIONS}
        env = {}
        for name, value in env_of(c).items():
            if name.startswith(("GRM_TLS", "GRM_UPSTREAM", "GRM_AUTH", "GRM_HEALTH")):
                assert name in known, f"{part}: {name} is not a setting of the service"
            env[name] = mounted.get(value, value) if isinstance(value, str) else "from-a-secret"
        settings = module.build_settings(build_parser().parse_args(c["args"]), env)
        assert settings.server.tls is not None and settings.server.tls.mutual, part
        assert settings.server.auth_token == TOKEN, part
        assert settings.server.health_port == 8086, part
        if part == "aggregator":
            assert settings.upstream.tls and settings.upstream.cert_pem is not None
            assert settings.upstream.server_name == "grm.internal"
            assert settings.upstream.token == TOKEN


def test_values_document_the_security_settings() -> None:
    text = (Path(__file__).resolve().parents[2] / "charts" / "grm" / "values.yaml").read_text(
        encoding="utf-8"
    )
    assert "\ntls:\n  # -- " in text and "\nauth:\n  # -- " in text
