"""The chart's aggregator.http values: OpenRLHF's `POST /get_reward` port, off by default.

Rendered with the pinned helm exactly as tests/test_helm_chart.py renders (its helpers are
imported): the env the aggregator reads (parsed by its own settings code), the named
containerPort, the Service port and the NetworkPolicy ingress must all agree, and every
document still validates strictly against the Kubernetes schemas.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from tests.support.helm import CHART as CHART_DIR
from tests.support.helm import (
    KUBE_VERSIONS,
    container,
    env_of,
    find,
    helm,
    load_docs,
    template,
)

ON = "aggregator.http.enabled=true"


def render(*values: str) -> list[dict[str, Any]]:
    args = [a for v in values for a in ("--set", v)]
    return load_docs(template("rl", *args).stdout)


def http_parts(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """What each aggregator object says about the http port (None where it says nothing)."""
    c = container(find(docs, "Deployment", "aggregator"), "aggregator")
    service = find(docs, "Service", "aggregator")
    policy = find(docs, "NetworkPolicy", "aggregator")
    rules = [r for r in policy["spec"]["ingress"] if any(p["port"] == "http" for p in r["ports"])]
    return {
        "env": env_of(c).get("GRM_HTTP_PORT"),
        "container": next((p for p in c["ports"] if p["name"] == "http"), None),
        "service": next((p for p in service["spec"]["ports"] if p["name"] == "http"), None),
        "policy": rules,
        "grpc_rule": next(
            r for r in policy["spec"]["ingress"] if any(p["port"] == "grpc" for p in r["ports"])
        ),
    }


def test_off_by_default() -> None:
    parts = http_parts(render())
    assert parts["env"] is None and parts["container"] is None and parts["service"] is None
    assert parts["policy"] == []


def test_enabled_sets_env_port_service_and_policy_together() -> None:
    docs = render(ON)
    parts = http_parts(docs)
    assert parts["env"] == "5000"
    assert parts["container"] == {"name": "http", "containerPort": 5000, "protocol": "TCP"}
    assert parts["service"] == {
        "name": "http",
        "port": 5000,
        "targetPort": "http",
        "protocol": "TCP",
        "appProtocol": "http",
    }
    # the same clients as the gRPC port (any source by default), in the same rule
    assert parts["policy"] == [parts["grpc_rule"]] and "from" not in parts["grpc_rule"]
    for version in KUBE_VERSIONS:
        for doc in docs:
            assert kubernetes_validate.validate(doc, version, strict=True) == version


def test_the_aggregator_reads_the_port_with_its_own_settings_code() -> None:
    from grm.cli.main import build_parser
    from grm.services.aggregator.main import build_settings

    doc = find(render(ON, "aggregator.http.port=8000"), "Deployment", "aggregator")
    c = container(doc, "aggregator")
    env = {k: v if isinstance(v, str) else "from-a-field" for k, v in env_of(c).items()}
    settings = build_settings(build_parser().parse_args(c["args"]), env)
    assert settings.http is not None and settings.http.port == 8000
    assert settings.http.host == "0.0.0.0"  # reachable through the Service, not loopback only
    assert any(p["containerPort"] == 8000 for p in c["ports"] if p["name"] == "http")


def test_network_policy_clients_restrict_the_http_port_too() -> None:
    docs = load_docs(
        template(
            "rl",
            "--set",
            ON,
            "--set-json",
            'networkPolicy.clients=[{"namespaceSelector":{"matchLabels":{"team":"rl"}}}]',
        ).stdout
    )
    [rule] = http_parts(docs)["policy"]
    assert {"namespaceSelector": {"matchLabels": {"team": "rl"}}} in rule["from"]


@pytest.mark.parametrize("port", ["50051", "9090"])
def test_a_port_clash_fails_with_a_message(port: str) -> None:
    result = template(
        "rl", "--set", f"{ON},aggregator.http.port={port},metrics.port=9090", check=False
    )
    assert result.returncode != 0
    assert "aggregator.http.port must differ" in result.stderr


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [("aggregator.http.enable=true", "enable"), ("aggregator.http.port=70000", "port")],
)
def test_a_mistyped_http_value_fails(setting: str, complaint: str) -> None:
    result = template("rl", "--set", setting, check=False)
    assert result.returncode != 0
    assert "schema" in result.stderr and complaint in result.stderr


def test_lint_strict_and_notes_with_http() -> None:
    assert "0 chart(s) failed" in helm("lint", "--strict", str(CHART_DIR), "--set", ON).stdout
    out = helm("install", "grm", str(CHART_DIR), "-n", "ns1", "--dry-run=client", "--set", ON)
    assert "http://grm-aggregator.ns1.svc:5000/get_reward" in out.stdout
