"""The Helm chart under test: the pinned tools, the rendered scenarios and accessors.

Shared by the chart tests (tests/chart/): `helm` and `template` run the pinned binary from
.tools/, `SCENARIOS` names every values file, and the accessors pick documents, containers
and settings out of the rendered manifests.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "grm"
TOOLS = ROOT / ".tools"
HELM = Path(os.environ.get("GRM_HELM", TOOLS / "bin" / "helm"))
CHECKOV = Path(os.environ.get("GRM_CHECKOV", TOOLS / "checkov-venv" / "bin" / "checkov"))
FETCH_TOOLS = ROOT / "scripts" / "fetch-tools.sh"

SCENARIOS = {
    "defaults": None,
    # the defaults on a cluster that serves the Prometheus Operator CRDs (metrics.*.enabled: auto)
    "prometheus": None,
    "gke-vllm": "ci/gke-vllm-values.yaml",
    "eks-sglang": "ci/eks-sglang-values.yaml",
    "onprem-tgi": "ci/onprem-tgi-values.yaml",
    "tgi-sidecar": "ci/tgi-sidecar-values.yaml",
    "tgi-nodepools": "ci/tgi-nodepools-values.yaml",
    "external-redis": "ci/external-redis-values.yaml",
    "keda": "ci/keda-values.yaml",
    "cpu-demo": "ci/cpu-demo-values.yaml",
    "minimal": "ci/minimal-values.yaml",
}
# API versions `helm template` is told the cluster serves, per scenario (default: none).
CLUSTER_APIS = {
    "prometheus": (
        "monitoring.coreos.com/v1/ServiceMonitor",
        "monitoring.coreos.com/v1/PodMonitor",
        "custom.metrics.k8s.io/v1beta1",
    ),
}
KUBE_VERSIONS = ("1.30", "1.35")
GPU = "nvidia.com/gpu"
SERVICES = {
    "aggregator": "grm.services.aggregator.main",
    "principles": "grm.services.principles.main",
    "sampler": "grm.services.sampler.main",
}
# GRM_* variables the chart sets ahead of the services, with the issue that adds each setting.
# The services ignore variables they do not declare, so these are inert until then; any other
# GRM_* name the chart sets must be a setting the service declares today.
PENDING_SETTINGS = {
    # Read from the environment by grm.cache.CacheSettings.from_env, not declared as flags.
    "GRM_REDIS_PASSWORD": "the cache's Redis password (grm.cache)",
    "GRM_CACHE_PREFIX": "the cache's key prefix (grm.cache)",
}
# Flags the chart sets itself (from dedicated values), so `settings` must not carry them.
CHART_MANAGED_FLAGS = {
    "host",
    "port",
    "port-file",
    "log-level",
    "grace-s",
    "samplers",
    "principles",
    "model-path",
    "n-ctx",
    "n-threads",
    "metrics-port",
    "backend",
    "tgi-url",
    "openai-url",
    "engine",
    "openai-api-key-file",
}


# --- tools and rendering ------------------------------------------------------------------


def tool(path: Path, what: str) -> Path:
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"{what} not found at {path}: run scripts/fetch-tools.sh (scripts/dev.sh test does)"
        )
    return path


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(tool(HELM, "helm")), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "HELM_CACHE_HOME": str(TOOLS / "helm-home" / "cache"),
            "HELM_CONFIG_HOME": str(TOOLS / "helm-home" / "config"),
            "HELM_DATA_HOME": str(TOOLS / "helm-home" / "data"),
        },
    )
    if check and result.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def template(release: str, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return helm("template", release, str(CHART), "--namespace", release, *extra, check=check)


def scenario_args(scenario: str, apis: bool = True) -> list[str]:
    """helm arguments of a scenario: its values file and (for `template`) the cluster's APIs."""
    values = SCENARIOS[scenario]
    served = CLUSTER_APIS.get(scenario, ()) if apis else ()
    return (["--values", str(CHART / values)] if values else []) + [
        a for api in served for a in ("--api-versions", api)
    ]


def load_docs(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(docs: list[dict[str, Any]], kind: str, part: str) -> dict[str, Any]:
    """The one document of `kind` named `<release>-grm-<part>`."""
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(f"-grm-{part}")]
    assert len(hits) == 1, (
        f"expected one {kind} *-grm-{part}, found {[d['metadata']['name'] for d in hits]}"
    )
    return hits[0]


def kinds(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]


def workloads(docs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    return (d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Pod", "Job"))


def all_containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod's containers and init containers (native sidecars are init containers)."""
    spec = pod_spec(doc)
    return [*spec.get("initContainers", []), *spec["containers"]]


def container(doc: dict[str, Any], name: str) -> dict[str, Any]:
    [hit] = [c for c in all_containers(doc) if c["name"] == name]
    return hit


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    """name -> literal value, or the valueFrom mapping."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def hpa_for(docs: list[dict[str, Any]], part: str) -> dict[str, Any] | None:
    hits = [
        d
        for d in kinds(docs, "HorizontalPodAutoscaler")
        if d["spec"]["scaleTargetRef"]["name"].endswith(f"-grm-{part}")
    ]
    assert len(hits) <= 1
    return hits[0] if hits else None


def gpu_limit(c: dict[str, Any]) -> int:
    return int(c.get("resources", {}).get("limits", {}).get(GPU, 0))


# The engines' images and the user each runs as (sources: tests/test_chart_engines.py).
ENGINE_IMAGES = {
    "tgi": "ghcr.io/huggingface/text-generation-inference:",
    "vllm": "docker.io/vllm/vllm-openai:",
    "sglang": "docker.io/lmsysorg/sglang:",
}
ENGINE_USERS = {"tgi": 0, "vllm": 2000, "sglang": 0}


def is_engine(c: dict[str, Any]) -> bool:
    return c["name"] in ENGINE_IMAGES and c["image"].startswith(ENGINE_IMAGES[c["name"]])


def arg_after(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def seconds(probe: dict[str, Any]) -> int:
    return probe["periodSeconds"] * probe["failureThreshold"]


# --- helm itself ------------------------------------------------------------------------------


def adapter_rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The prometheus-adapter rules the chart renders (chart values under `rules.custom`)."""
    hits = [d for d in kinds(docs, "ConfigMap") if d["metadata"]["name"].endswith("-adapter-rules")]
    if not hits:
        return []
    return yaml.safe_load(hits[0]["data"]["values.yaml"])["rules"]["custom"]
