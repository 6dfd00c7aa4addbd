"""The Helm chart, checked with the real tools: helm, Kubernetes schemas and checkov.

No cluster is needed. `scripts/fetch-tools.sh` (run by `scripts/dev.sh test`) puts a pinned
helm and checkov into .tools/; kubernetes-validate comes with the dev extra.

Every scenario (the defaults and each charts/grm/ci/*-values.yaml) is rendered once, as
release <scenario> in namespace <scenario>, and then:
- every document is validated against the Kubernetes 1.30 and 1.35 schemas (strict);
- the scenario's own promises are asserted (GPU placement, TGI shape, autoscaling, Redis);
- the hardening every pod must have is asserted;
- the GRM_* environment and args of each service are parsed by the service's own settings code;
- checkov runs once over all of them plus docker/Dockerfile, against tests/checkov-skips.yaml.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import inspect
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from grm.rpc.server import LIVENESS_SERVICE
from tests.support.helm import (
    CHART,
    CHART_MANAGED_FLAGS,
    CHECKOV,
    ENGINE_USERS,
    FETCH_TOOLS,
    GPU,
    HELM,
    KUBE_VERSIONS,
    PENDING_SETTINGS,
    ROOT,
    SCENARIOS,
    SERVICES,
    adapter_rules,
    all_containers,
    arg_after,
    container,
    env_of,
    find,
    gpu_limit,
    helm,
    hpa_for,
    is_engine,
    kinds,
    load_docs,
    pod_spec,
    scenario_args,
    seconds,
    template,
    tool,
    workloads,
)


def test_helm_is_the_pinned_binary() -> None:
    script = FETCH_TOOLS.read_text(encoding="utf-8")
    version = re.search(r"^HELM_VERSION=(\S+)$", script, re.M).group(1)
    want = re.search(r"^HELM_SHA256=([0-9a-f]{64})$", script, re.M).group(1)
    with open(tool(HELM, "helm"), "rb") as f:
        assert hashlib.file_digest(f, "sha256").hexdigest() == want
    assert helm("version", "--short").stdout.startswith(version + "+")


def test_every_ci_values_file_is_a_scenario() -> None:
    files = {f"ci/{p.name}" for p in (CHART / "ci").glob("*-values.yaml")}
    assert files == {v for v in SCENARIOS.values() if v}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_lint_strict(scenario: str) -> None:
    result = helm("lint", "--strict", str(CHART), *scenario_args(scenario, apis=False))
    assert "0 chart(s) failed" in result.stdout


def test_chart_declares_the_kubernetes_versions_it_supports() -> None:
    for version in KUBE_VERSIONS:
        template("kv", "--kube-version", f"{version}.0")
    too_old = template("kv", "--kube-version", "1.29.0", check=False)
    assert too_old.returncode != 0 and "kubeVersion" in too_old.stderr


def test_notes_render_with_the_front_door() -> None:
    out = helm("install", "grm", str(CHART), "--namespace", "ns1", "--dry-run=client").stdout
    notes = out[out.index("NOTES:") :]
    assert "grm-aggregator.ns1.svc:50051" in notes
    assert "helm test grm -n ns1" in notes
    assert "grm_sampler_demand_ratio" in notes


# --- values and schema ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("sampler.replicaCont=3", "replicaCont"),
        ("aggregator.settings.max-kk=3", "max-kk"),
        ("redis.mode=sentinel", "redis"),
        ("engine.nodePools[0].name=a,engine.nodePools[0].gpu=1", "gpu"),
        ("engine.kind=triton", "kind"),
        ("image.digest=sha256:abc", "digest"),
        ("sampler.autoscaling.mode=vpa", "mode"),
        ("networkPolicy.enable=false", "enable"),
    ],
)
def test_a_mistyped_value_fails(setting: str, complaint: str) -> None:
    result = template("typo", "--set", setting, check=False)
    assert result.returncode != 0, f"--set {setting} rendered:\n{result.stdout[:500]}"
    assert "schema" in result.stderr and complaint in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        (["--set", "engine.mode=nodePools"], "needs at least one entry in engine.nodePools"),
        (["--set", "principles.enabled=true,principles.backend=engine"], "principles.engineUrls"),
        (["--set", "redis.mode=external"], "redis.external.url is required"),
    ],
)
def test_an_incomplete_setup_fails_with_a_message(settings: list[str], complaint: str) -> None:
    result = template("incomplete", *settings, check=False)
    assert result.returncode != 0
    assert complaint in result.stderr


def _schema() -> dict[str, Any]:
    return json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))


# Schema nodes that are Kubernetes objects passed through verbatim (affinity, tolerations,
# EnvVar, volume sources, security contexts) and Helm's own `global`.
KUBERNETES_OBJECTS = {
    "/$defs/k8sObject",
    "/$defs/k8sList/items",
    "/$defs/envList/items",
    "/properties/global",
}


def test_schema_closes_every_object_the_chart_owns() -> None:
    """additionalProperties: false wherever the chart defines the keys; maps are typed maps."""
    open_objects = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object":
                if path in KUBERNETES_OBJECTS:
                    pass  # Kubernetes checks these itself (and rejects unknown fields)
                elif "properties" in node:
                    if node.get("additionalProperties") is not False:
                        open_objects.append(path)
                elif not isinstance(node.get("additionalProperties"), dict):  # a typed map
                    open_objects.append(path)
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for n, value in enumerate(node):
                walk(value, f"{path}/{n}")

    walk(_schema(), "")
    assert open_objects == []


def test_values_match_the_schema_and_every_value_is_documented() -> None:
    text = (CHART / "values.yaml").read_text(encoding="utf-8")
    jsonschema.Draft202012Validator(_schema()).validate(yaml.safe_load(text))
    undocumented = []
    prev = ""
    list_indent: int | None = None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            prev = ""
            continue
        indent = len(line) - len(line.lstrip())
        if list_indent is not None and indent > list_indent:
            prev = stripped  # inside a list item: part of a documented value
            continue
        list_indent = None
        if stripped.startswith("- "):
            list_indent = indent
        elif re.match(r"^[^#\s][^:]*:(\s|$)", stripped) and not prev.startswith("#"):
            undocumented.append(f"{number}: {stripped}")
        prev = stripped
    assert undocumented == []


def test_settings_keys_are_flags_of_the_services() -> None:
    """The schema's `settings` enums only name flags each service declares (and not ours)."""
    schema = _schema()
    for component, module_name in SERVICES.items():
        flags = {o.flag.lstrip("-") for o in importlib.import_module(module_name).OPTIONS}
        allowed = set(
            schema["properties"][component]["properties"]["settings"]["propertyNames"]["enum"]
        )
        assert allowed <= flags, f"{component}: not flags of the service: {allowed - flags}"
        assert not allowed & CHART_MANAGED_FLAGS


def test_image_digest_pins_the_reference() -> None:
    digest = "sha256:" + "ab" * 32
    docs = load_docs(
        template(
            "pinned",
            "--set",
            f"image.digest={digest},engine.tgi.image.digest={digest},redis.builtin.image.digest={digest}",
        ).stdout
    )
    images = {c["image"] for d in workloads(docs) for c in all_containers(d)}
    assert images and all(i.endswith("@" + digest) for i in images), images
    assert "ghcr.io/grm-suite/grm:0.1.0@" + digest in images


# --- Kubernetes schemas -------------------------------------------------------------------------

# CRDs have no schema in kubernetes-validate: a structural check of our own stands in.
_DURATION = {"type": "string", "pattern": r"^[0-9]+(ms|s|m|h)$"}
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "metadata": {"type": "object", "required": ["name", "namespace"]},
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["scaleTargetRef", "triggers"],
                "properties": {
                    "scaleTargetRef": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name"],
                        "properties": {
                            "apiVersion": {"type": "string"},
                            "kind": {"type": "string"},
                            "name": {"type": "string"},
                        },
                    },
                    "pollingInterval": {"type": "integer", "minimum": 1},
                    "cooldownPeriod": {"type": "integer", "minimum": 0},
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "fallback": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["failureThreshold", "replicas"],
                        "properties": {
                            "failureThreshold": {"type": "integer", "minimum": 1},
                            "replicas": {"type": "integer", "minimum": 0},
                        },
                    },
                    "advanced": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "horizontalPodAutoscalerConfig": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "name": {"type": "string"},
                                    "behavior": {"type": "object"},
                                },
                            }
                        },
                    },
                    "triggers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["type", "metadata"],
                            "properties": {
                                "type": {"type": "string"},
                                "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                                # KEDA's trigger metadata is map[string]string
                                "metadata": {
                                    "type": "object",
                                    "additionalProperties": {"type": "string"},
                                },
                            },
                        },
                    },
                },
            },
        },
    },
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "metadata": {"type": "object", "required": ["name", "namespace"]},
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["selector", "endpoints"],
                "properties": {
                    "selector": {"type": "object"},
                    "namespaceSelector": {
                        "type": "object",
                        "properties": {
                            "matchNames": {"type": "array", "items": {"type": "string"}}
                        },
                    },
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["port"],
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string"},
                                "interval": _DURATION,
                                "relabelings": {"type": "array", "items": {"type": "object"}},
                            },
                        },
                    },
                },
            },
        },
    },
}


def _pod_monitor_schema() -> dict[str, Any]:
    schema = copy.deepcopy(CRD_SCHEMAS[("monitoring.coreos.com/v1", "ServiceMonitor")])
    spec = schema["properties"]["spec"]
    spec["required"] = ["selector", "podMetricsEndpoints"]
    spec["properties"]["podMetricsEndpoints"] = spec["properties"].pop("endpoints")
    return schema


CRD_SCHEMAS[("monitoring.coreos.com/v1", "PodMonitor")] = _pod_monitor_schema()


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_document_validates_strictly(
    rendered: dict[str, list[dict[str, Any]]], scenario: str, version: str
) -> None:
    errors = []
    for doc in rendered[scenario]:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        key = (doc["apiVersion"], doc["kind"])
        if key in CRD_SCHEMAS:
            try:
                jsonschema.Draft202012Validator(CRD_SCHEMAS[key]).validate(doc)
            except jsonschema.ValidationError as exc:
                errors.append(f"{where}: {exc.message}")
            behavior = doc["spec"].get("advanced", {}).get("horizontalPodAutoscalerConfig", {})
            if "behavior" in behavior:  # KEDA passes it to the HPA it creates: check it as one
                hpa = {
                    "apiVersion": "autoscaling/v2",
                    "kind": "HorizontalPodAutoscaler",
                    "metadata": {"name": "keda-hpa"},
                    "spec": {
                        "scaleTargetRef": doc["spec"]["scaleTargetRef"],
                        "maxReplicas": doc["spec"]["maxReplicaCount"],
                        "behavior": behavior["behavior"],
                    },
                }
                kubernetes_validate.validate(hpa, version, strict=True)
            continue
        try:
            # A missing schema raises SchemaNotFoundError: a failure, not a skip.
            assert kubernetes_validate.validate(doc, version, strict=True) == version
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{where}: {path}: {exc.message}")
    assert errors == []


def test_crd_check_rejects_a_broken_scaled_object(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """The stand-in CRD check can fail (string metadata, known fields only)."""
    scaled = copy.deepcopy(find(rendered["keda"], "ScaledObject", "sampler"))
    scaled["spec"]["triggers"][0]["metadata"]["threshold"] = 24  # KEDA wants strings
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, CRD_SCHEMAS[("keda.sh/v1alpha1", "ScaledObject")])
    scaled = copy.deepcopy(find(rendered["keda"], "ScaledObject", "sampler"))
    scaled["spec"]["maxReplicas"] = 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, CRD_SCHEMAS[("keda.sh/v1alpha1", "ScaledObject")])


def test_strict_validation_can_fail(rendered: dict[str, list[dict[str, Any]]]) -> None:
    deployment = copy.deepcopy(find(rendered["defaults"], "Deployment", "aggregator"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.35", strict=True)


# --- what every scenario must carry -----------------------------------------------------------


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_pods_are_hardened(rendered: dict[str, list[dict[str, Any]]], scenario: str) -> None:
    for doc in workloads(rendered[scenario]):
        spec = pod_spec(doc)
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        assert doc["metadata"]["namespace"] == scenario, where
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] >= 10000, where
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, where
        mounts_tmp = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for c in all_containers(doc):
            cw = f"{where}/{c['name']}"
            sc = c["securityContext"]
            if is_engine(c):  # runs as its image's user: see tests/test_chart_engines.py
                assert sc["runAsUser"] == ENGINE_USERS[c["name"]], cw
            else:
                assert sc["runAsNonRoot"] is True and sc["runAsUser"] >= 10000, cw
                assert sc["readOnlyRootFilesystem"] is True, cw
            assert sc["allowPrivilegeEscalation"] is False, cw
            assert sc["capabilities"] == {"drop": ["ALL"]}, cw
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, cw
            tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert tmp and tmp[0]["name"] in mounts_tmp, f"{cw}: /tmp is not an emptyDir"
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{cw}: {kind}"
            assert c["imagePullPolicy"] in ("IfNotPresent", "Always"), cw
            assert re.fullmatch(r"[^:@\s]+:[\w.-]+(@sha256:[0-9a-f]{64})?", c["image"]), cw
            assert not c["image"].endswith(":latest"), cw
            if doc["kind"] not in ("Pod", "Job"):  # the helm test pod and the Job run once
                assert "readinessProbe" in c and "livenessProbe" in c, cw
        token = spec.get("automountServiceAccountToken")
        if doc["metadata"]["name"].endswith("-grm-aggregator"):
            discovery = env_of(container(doc, "aggregator")).get("GRM_SAMPLER_DISCOVERY")
            assert token is (discovery == "kubernetes"), where
        else:
            assert token is False, where


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_services_use_native_grpc_probes(
    rendered: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    seen = set()
    for part in SERVICES:
        docs = [
            d
            for d in kinds(rendered[scenario], "Deployment")
            if d["metadata"]["name"].endswith(f"-grm-{part}")
        ]
        for doc in docs:
            c = container(doc, part)
            port = next(p["containerPort"] for p in c["ports"] if p["name"] == "grpc")
            # readiness: the overall health (the aggregator's follows its samplers);
            # startup and liveness: the process only, never restarted for a dependency
            assert c["readinessProbe"]["grpc"] == {"port": port}, part
            for probe in ("startupProbe", "livenessProbe"):
                assert c[probe]["grpc"] == {"port": port, "service": LIVENESS_SERVICE}, part
            seen.add(part)
    assert {"aggregator", "sampler"} <= seen


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_service_env_and_args_parse_with_the_services_own_settings(
    rendered: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    """Each container's args go through `grm`'s parser and its env through build_settings."""
    from grm.cli.main import build_parser
    from grm.rpc import loop

    for doc in kinds(rendered[scenario], "Deployment"):
        for c in pod_spec(doc)["containers"]:
            if not c["image"].startswith("ghcr.io/grm-suite/grm:"):
                continue
            args = build_parser().parse_args(c["args"])
            assert args.command == "serve" and args.service == c["name"]
            module = importlib.import_module(SERVICES[args.service])
            known = {o.env for o in module.OPTIONS}
            if "CacheSettings" in inspect.getsource(module):  # the service reads the cache env
                known |= {"GRM_REDIS_URL", "GRM_REDIS_PASSWORD", "GRM_CACHE_PREFIX"}
            known.add(loop.ENV)  # every process's event loop (grm.rpc.loop), not an option
            assert env_of(c)[loop.ENV] in loop.CHOICES
            env = {}
            for name, value in env_of(c).items():
                if name.startswith("GRM_"):
                    assert name in known or name in PENDING_SETTINGS, (
                        f"{scenario} {c['name']}: {name} is not a setting of {args.service}"
                    )
                env[name] = value if isinstance(value, str) else "from-a-secret-or-field"
            settings = module.build_settings(args, env)
            assert settings.server.port == next(
                p["containerPort"] for p in c["ports"] if p["name"] == "grpc"
            )
            assert settings.server.host == "0.0.0.0"
            assert settings.log_level == env["GRM_LOG_LEVEL"]
            assert settings.server.grace_s == pod_spec(doc)["terminationGracePeriodSeconds"] - 5
            if "GRM_BACKEND" in env:  # the engine the chart runs is the one the service dials
                backend = settings.backend
                assert backend.backend == env["GRM_BACKEND"]
                if backend.backend == "openai":
                    assert backend.openai_url == tuple(env["GRM_OPENAI_URL"].split(","))
                    assert backend.engine == env["GRM_ENGINE"]
                    assert all(u.endswith("/v1") for u in backend.openai_url)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_pod_disruption_budgets_cover_the_services(
    rendered: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    docs = rendered[scenario]
    covered = {
        d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
        for d in kinds(docs, "PodDisruptionBudget")
    }
    for d in kinds(docs, "Deployment"):
        component = d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
        assert component in covered, f"{scenario}: no PDB for {component}"


# --- scenario by scenario -----------------------------------------------------------------------


def _assert_sidecar_on_gpu(docs: list[dict[str, Any]], gpus: int, engine: str = "tgi") -> dict:
    sampler = find(docs, "Deployment", "sampler")
    spec = pod_spec(sampler)
    # the engine is a native sidecar: an init container that keeps running
    assert [c["name"] for c in spec["initContainers"]] == [engine]
    assert [c["name"] for c in spec["containers"]] == ["sampler"]
    sidecar = container(sampler, engine)
    assert sidecar["restartPolicy"] == "Always"
    assert gpu_limit(sidecar) == gpus and int(sidecar["resources"]["requests"][GPU]) == gpus
    assert gpu_limit(container(sampler, "sampler")) == 0
    assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    # a full GPU pool has no room for a surge pod
    assert sampler["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    if engine == "tgi":
        assert env_of(container(sampler, "sampler"))["GRM_TGI_URL"] == "http://127.0.0.1:8080"
        _assert_tgi_container(sidecar, spec)
    return sampler


def _assert_tgi_container(tgi: dict[str, Any], spec: dict[str, Any]) -> None:
    args = tgi["args"]
    assert arg_after(args, "--model-id") == "Qwen/Qwen2.5-7B-Instruct"
    assert re.fullmatch(r"[0-9a-f]{40}", arg_after(args, "--revision"))
    assert int(arg_after(args, "--max-concurrent-requests")) > 0
    assert tgi["image"].startswith("ghcr.io/huggingface/text-generation-inference:3.")
    shm = next(m for m in tgi["volumeMounts"] if m["mountPath"] == "/dev/shm")
    volume = next(v for v in spec["volumes"] if v["name"] == shm["name"])
    assert volume["emptyDir"]["medium"] == "Memory"
    assert tgi["startupProbe"]["httpGet"]["path"] == "/health"
    assert seconds(tgi["startupProbe"]) >= 1200, "startup must allow for downloading the model"
    assert tgi["readinessProbe"]["httpGet"]["path"] == "/health"


DEMAND_METRIC = "grm_hpa_sampler_demand"


def _assert_demand_hpa(
    docs: list[dict[str, Any]], minimum: int, maximum: int, fed: bool = True
) -> dict[str, Any]:
    """The sampler HPA: on the demand metric when it is fed, else on CPU (the fallback)."""
    hpa = hpa_for(docs, "sampler")
    assert hpa is not None and hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (minimum, maximum)
    [metric] = hpa["spec"]["metrics"]
    if fed:
        assert metric["type"] == "Pods"
        assert metric["pods"]["metric"]["name"] == DEMAND_METRIC
        assert metric["pods"]["target"]["type"] == "AverageValue"
    else:
        assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    behavior = hpa["spec"]["behavior"]
    up, down = behavior["scaleUp"], behavior["scaleDown"]
    # the defaults `grm bench autoscale` chose (docs/benchmarks.md)
    assert up["stabilizationWindowSeconds"] == 60, "a passing backlog adds no pods"
    assert down["stabilizationWindowSeconds"] == 120, "scale down after 2 calm minutes"
    assert max(p["value"] for p in up["policies"] if p["type"] == "Percent") >= 100
    [policy] = down["policies"]
    assert (policy["type"], policy["value"], policy["periodSeconds"]) == ("Percent", 50, 60)
    assert "replicas" not in find(docs, "Deployment", "sampler")["spec"], "the HPA owns replicas"
    return hpa


def _assert_cpu_hpa(docs: list[dict[str, Any]]) -> None:
    hpa = hpa_for(docs, "aggregator")
    assert hpa is not None
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"


def test_defaults(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["defaults"]
    sampler = _assert_sidecar_on_gpu(docs, gpus=1)
    # no node label only some clusters have; requesting nvidia.com/gpu places the pod
    assert "nodeSelector" not in pod_spec(sampler)
    # no Prometheus Operator CRDs in this (client-side) render: the HPA falls back to CPU
    _assert_demand_hpa(docs, 1, 8, fed=False)
    _assert_cpu_hpa(docs)
    assert kinds(docs, "ScaledObject") == [] and kinds(docs, "ServiceMonitor") == []
    assert kinds(docs, "PodMonitor") == [] and adapter_rules(docs) == []
    # headless sampler Service for EndpointSlice discovery
    assert find(docs, "Service", "sampler")["spec"]["clusterIP"] == "None"
    agg = find(docs, "Deployment", "aggregator")
    env = env_of(container(agg, "aggregator"))
    assert env["GRM_SAMPLER_DISCOVERY"] == "kubernetes"
    assert env["GRM_SAMPLERS"] == "defaults-grm-sampler.defaults.svc:50053"
    assert env["GRM_DECODING"] == "served"  # engine samplers: the paper's decoding defaults
    assert env["GRM_REDIS_URL"] == {
        "secretKeyRef": {"name": "defaults-grm-redis-cache", "key": "redis-url"}
    }
    assert env["GRM_REDIS_PASSWORD"]["secretKeyRef"]["key"] == "redis-password"
    assert "GRM_PRINCIPLES" not in env
    # RBAC: a namespaced, read-only Role for the discovery watch, bound to the aggregator only
    role = find(docs, "Role", "aggregator")
    assert {tuple(r["apiGroups"]): (r["resources"], r["verbs"]) for r in role["rules"]} == {
        ("discovery.k8s.io",): (["endpointslices"], ["get", "list", "watch"]),
        ("",): (["pods"], ["get", "list", "watch"]),
    }
    binding = find(docs, "RoleBinding", "aggregator")
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": pod_spec(agg)["serviceAccountName"],
            "namespace": "defaults",
        }
    ]
    assert kinds(docs, "ClusterRole") == [] and kinds(docs, "ClusterRoleBinding") == []
    # built-in Redis: one replica, password from the chart's Secret
    redis = find(docs, "StatefulSet", "redis")
    assert redis["spec"]["replicas"] == 1
    secret = find(docs, "Secret", "redis-cache")
    assert set(secret["data"]) == {"redis-url", "redis-password"}
    # helm test: checks the aggregator's gRPC health through its Service
    test_pod = find(docs, "Pod", "test-health")
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    c = test_pod["spec"]["containers"][0]
    assert c["command"] == ["grm-healthcheck"]
    assert arg_after(c["args"], "--address") == "defaults-grm-aggregator.defaults.svc:50051"
    assert arg_after(c["args"], "--service") == "grm.v1.RewardService"


def _selected_components(policy: dict[str, Any], port: str) -> set[str] | None:
    """Components allowed to reach `port`; None = any source."""
    allowed: set[str] = set()
    for rule in policy["spec"].get("ingress", []):
        if any(p["port"] == port for p in rule.get("ports", [])):
            if "from" not in rule:
                return None
            for peer in rule["from"]:
                labels = peer.get("podSelector", {}).get("matchLabels", {})
                allowed.add(labels.get("app.kubernetes.io/component", "?"))
    return allowed


@pytest.mark.parametrize("scenario", ["defaults", "tgi-nodepools", "cpu-demo", "gke-vllm"])
def test_network_policies(rendered: dict[str, list[dict[str, Any]]], scenario: str) -> None:
    docs = rendered[scenario]
    policies = {d["metadata"]["name"].split("-grm-", 1)[1]: d for d in kinds(docs, "NetworkPolicy")}
    assert _selected_components(policies["aggregator"], "grpc") is None  # clients: any source
    assert _selected_components(policies["sampler"], "grpc") == {"aggregator", "principles"}
    assert _selected_components(policies["redis"], "redis") == {"aggregator"}
    if "principles" in policies:
        assert _selected_components(policies["principles"], "grpc") == {"aggregator"}
    for name, policy in policies.items():
        if name.startswith("engine-"):
            api, *scrape = [
                r
                for r in policy["spec"]["ingress"]
                if any(p["port"] == "engine-http" for p in r["ports"])
            ]
            assert _selected_components({"spec": {"ingress": [api]}}, "engine-http") == {
                "sampler",
                "principles",
            }
            # vLLM / SGLang serve /metrics on the API port: the scrapers' rule names it too
            for rule in scrape:
                assert all("namespaceSelector" in peer for peer in rule["from"]), rule
    assert policies["test"]["spec"].get("ingress") is None  # the test pod takes no connections
    if "model-download" in policies:
        assert policies["model-download"]["spec"].get("ingress") is None
    # every pod the release runs is selected by some policy
    selected = {
        p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for p in policies.values()
    }
    for doc in workloads(docs):
        labels = (doc["metadata"] if doc["kind"] == "Pod" else doc["spec"]["template"]["metadata"])[
            "labels"
        ]
        assert labels["app.kubernetes.io/component"] in selected


def test_network_policy_clients_restrict_the_front_door() -> None:
    docs = load_docs(
        template(
            "np",
            "--set-json",
            'networkPolicy.clients=[{"namespaceSelector":{"matchLabels":{"team":"rl"}}}]',
        ).stdout
    )
    policy = find(docs, "NetworkPolicy", "aggregator")
    peers = policy["spec"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"team": "rl"}}} in peers
    assert any(
        p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component") == "test"
        for p in peers
    )


def test_tgi_sidecar(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["tgi-sidecar"]
    sampler = _assert_sidecar_on_gpu(docs, gpus=2)
    spec = pod_spec(sampler)
    tgi = container(sampler, "tgi")
    assert arg_after(tgi["args"], "--num-shard") == "2"
    assert arg_after(tgi["args"], "--max-concurrent-requests") == "256"
    assert env_of(tgi)["HF_TOKEN"] == {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN"}}
    assert spec["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert {
        "key": "dedicated",
        "operator": "Equal",
        "value": "grm-samplers",
        "effect": "NoSchedule",
    } in spec["tolerations"]
    assert spec["runtimeClassName"] == "nvidia" and spec["priorityClassName"] == "grm-gpu"
    assert "podAntiAffinity" in spec["affinity"]
    hpa = _assert_demand_hpa(docs, 2, 16)
    assert hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"] == "750m"
    assert env_of(container(sampler, "sampler"))["GRM_CONCURRENCY"] == "32"
    assert (
        env_of(container(find(docs, "Deployment", "aggregator"), "aggregator"))["GRM_MAX_K"] == "32"
    )
    rules = adapter_rules(docs)
    assert rules[0]["name"]["as"] == DEMAND_METRIC != "grm_sampler_demand_ratio"
    for gauge in ("grm_sampler_in_flight", "grm_sampler_queued", "grm_sampler_capacity"):
        assert gauge in rules[0]["metricsQuery"]


def test_tgi_per_node_pool(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["tgi-nodepools"]
    l4, a100 = find(docs, "Deployment", "engine-l4"), find(docs, "Deployment", "engine-a100")
    for deployment, gpus in ((l4, 1), (a100, 2)):
        spec = pod_spec(deployment)
        tgi = container(deployment, "tgi")
        assert gpu_limit(tgi) == gpus
        assert "nvidia.com/gpu.present" not in spec["nodeSelector"]
        assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
        _assert_tgi_container(tgi, spec)
    assert pod_spec(l4)["nodeSelector"]["cloud.google.com/gke-accelerator"] == "nvidia-l4"
    a100_spec = pod_spec(a100)
    assert a100_spec["nodeSelector"]["node.kubernetes.io/instance-type"] == "a2-highgpu-2g"
    assert a100_spec["runtimeClassName"] == "nvidia" and a100_spec["priorityClassName"] == "grm-gpu"
    assert {
        "key": "dedicated",
        "operator": "Equal",
        "value": "a100",
        "effect": "NoSchedule",
    } in a100_spec["tolerations"]
    assert arg_after(container(a100, "tgi")["args"], "--num-shard") == "2"
    # pools differ in resources and arguments
    a100_tgi, l4_tgi = container(a100, "tgi"), container(l4, "tgi")
    assert a100_tgi["resources"]["requests"]["memory"] == "64Gi"
    assert l4_tgi["resources"]["requests"]["memory"] == "32Gi"
    assert arg_after(a100_tgi["args"], "--max-batch-prefill-tokens") == "16384"
    assert "--max-batch-prefill-tokens" not in l4_tgi["args"]
    # the L4 pool scales on TGI's queue; the A100 pool is fixed
    assert "replicas" not in l4["spec"] and a100["spec"]["replicas"] == 1
    l4_hpa = hpa_for(docs, "engine-l4")
    assert (l4_hpa["spec"]["minReplicas"], l4_hpa["spec"]["maxReplicas"]) == (2, 6)
    assert l4_hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "grm_hpa_engine_queue"
    assert hpa_for(docs, "engine-a100") is None
    # samplers are CPU pods spreading over both pools' Services
    sampler = find(docs, "Deployment", "sampler")
    assert [c["name"] for c in pod_spec(sampler)["containers"]] == ["sampler"]
    assert "nodeSelector" not in pod_spec(sampler) and "tolerations" not in pod_spec(sampler)
    urls = "http://tgi-nodepools-grm-engine-l4.tgi-nodepools.svc:8080,http://tgi-nodepools-grm-engine-a100.tgi-nodepools.svc:8080"
    assert env_of(container(sampler, "sampler"))["GRM_TGI_URL"] == urls
    assert find(docs, "Service", "engine-l4")["spec"]["ports"][0]["port"] == 8080
    principles = find(docs, "Deployment", "principles")
    assert env_of(container(principles, "principles"))["GRM_TGI_URL"] == urls
    assert "GRM_PRINCIPLES" in env_of(
        container(find(docs, "Deployment", "aggregator"), "aggregator")
    )
    _assert_demand_hpa(docs, 2, 12)
    # only the grm `metrics` port is scraped through Services; the engines through a PodMonitor
    [monitor] = kinds(docs, "ServiceMonitor")
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == {"metrics"}
    [pods] = kinds(docs, "PodMonitor")
    assert [e["port"] for e in pods["spec"]["podMetricsEndpoints"]] == ["engine-metrics"]


def test_external_redis(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["external-redis"]
    assert kinds(docs, "StatefulSet") == [] and kinds(docs, "Secret") == []
    assert not [d for d in kinds(docs, "NetworkPolicy") if d["metadata"]["name"].endswith("-redis")]
    env = env_of(container(find(docs, "Deployment", "aggregator"), "aggregator"))
    assert env["GRM_REDIS_URL"] == {"secretKeyRef": {"name": "grm-redis-credentials", "key": "url"}}
    assert env["GRM_REDIS_PASSWORD"] == {
        "secretKeyRef": {"name": "grm-redis-credentials", "key": "password"}
    }
    assert env["GRM_CACHE_PREFIX"] == "grm-prod"
    _assert_sidecar_on_gpu(docs, gpus=1)
    _assert_demand_hpa(docs, 1, 8, fed=False)


def test_external_redis_url_in_values_goes_to_a_secret() -> None:
    docs = load_docs(
        template(
            "ext",
            "--set",
            "redis.mode=external,redis.external.url=rediss://cache.example:6380/0,redis.external.existingSecret=pw",
        ).stdout
    )
    secret = find(docs, "Secret", "redis-cache")
    assert set(secret["data"]) == {"redis-url"}
    env = env_of(container(find(docs, "Deployment", "aggregator"), "aggregator"))
    assert env["GRM_REDIS_URL"]["secretKeyRef"] == {
        "name": secret["metadata"]["name"],
        "key": "redis-url",
    }
    assert env["GRM_REDIS_PASSWORD"]["secretKeyRef"] == {"name": "pw", "key": "redis-password"}


def test_keda(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["keda"]
    assert hpa_for(docs, "sampler") is None, "KEDA creates the sampler HPA itself"
    _assert_cpu_hpa(docs)
    scaled = find(docs, "ScaledObject", "sampler")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == "keda-grm-sampler"
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 10)
    [trigger] = spec["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    query = trigger["metadata"]["query"]
    assert 'grm_sampler_in_flight{namespace="keda",pod=~"keda-grm-sampler-.*"}' in query
    assert "grm_sampler_queued" in query and "grm_sampler_capacity" in query
    # the demand in pods against the HPA's per-pod ratio target (1), not an absolute count
    assert trigger["metadata"]["threshold"] == "1"
    assert "grm_k_deficit_total" in query, "the samples the k planner cut count as demand"
    assert spec["fallback"] == {"failureThreshold": 3, "replicas": 2}
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 120
    assert "replicas" not in find(docs, "Deployment", "sampler")["spec"]
    [monitor] = kinds(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    _assert_sidecar_on_gpu(docs, gpus=1)
    metrics_rule = [
        r
        for r in find(docs, "NetworkPolicy", "sampler")["spec"]["ingress"]
        if r["ports"][0]["port"] == "metrics"
    ]
    assert metrics_rule[0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]


def test_metric_window_averages_the_gauges_for_hpa_and_keda() -> None:
    # One k=32 burst on one pod should not add pods: the window averages the gauges in both
    # the prometheus-adapter rule and KEDA's query; capacity stays an instant value.
    window = "--set=sampler.autoscaling.metric.window=90s"
    scraped = "--set=metrics.serviceMonitor.enabled=true,sampler.autoscaling.deficit.enabled=false"
    adapter = load_docs(template("win", window, scraped).stdout)
    query = adapter_rules(adapter)[0]["metricsQuery"]
    assert "avg_over_time(grm_sampler_in_flight{<<.LabelMatchers>>}[90s])" in query
    assert "avg_over_time(grm_sampler_queued{<<.LabelMatchers>>}[90s])" in query
    assert "avg_over_time(grm_sampler_capacity" not in query
    keda = load_docs(template("win", window, scraped, "--set=sampler.autoscaling.mode=keda").stdout)
    [trigger] = find(keda, "ScaledObject", "sampler")["spec"]["triggers"]
    sel = 'namespace="win",pod=~"win-grm-sampler-.*"'
    assert trigger["metadata"]["query"] == (
        f"(sum(avg_over_time(grm_sampler_in_flight{{{sel}}}[90s]))"
        f" + sum(avg_over_time(grm_sampler_queued{{{sel}}}[90s])))"
        f" / clamp_min(avg(grm_sampler_capacity{{{sel}}}), 1)"
    )
    bad = template("win", "--set=sampler.autoscaling.metric.window=a minute", check=False)
    assert bad.returncode != 0 and "window" in bad.stderr


def test_deficit_adds_the_samples_the_planner_cut_to_the_demand() -> None:
    # rate(k deficit) x the samplers' mean generation time = the samples the cut would keep
    # running; the adapter rule gives each pod an equal share of it in pods (the HPA's average
    # x pods is then the whole demand), KEDA adds it to the pool's samples. 0 until the series
    # exist, so a pool no request was cut in still reports its demand.
    scraped = "--set=metrics.serviceMonitor.enabled=true"
    sampler = 'namespace="cut",pod=~"cut-grm-sampler-.*"'
    generate = f'{sampler},stage="generate"'
    cut = (
        'sum(rate(grm_k_deficit_total{namespace="cut",pod=~"cut-grm-aggregator-.*"}[2m]))'
        f" * sum(rate(grm_stage_duration_seconds_sum{{{generate}}}[2m]))"
        f" / clamp_min(sum(rate(grm_stage_duration_seconds_count{{{generate}}}[2m])), 1e-9)"
    )
    window = "--set=sampler.autoscaling.deficit.window=2m"
    [rule] = adapter_rules(load_docs(template("cut", scraped, window).stdout))
    share = f"scalar(({cut}) / clamp_min(sum(grm_sampler_capacity{{{sampler}}}), 1) or vector(0))"
    assert rule["metricsQuery"].endswith(f"), 1) + {share}")
    assert rule["metricsQuery"].count("(") == rule["metricsQuery"].count(")")
    keda = load_docs(template("cut", scraped, window, "--set=sampler.autoscaling.mode=keda").stdout)
    [trigger] = find(keda, "ScaledObject", "sampler")["spec"]["triggers"]
    query = trigger["metadata"]["query"]
    assert f" + scalar({cut} or vector(0))) / clamp_min(avg(grm_sampler_capacity" in query
    assert query.count("(") == query.count(")")
    # the counter's name follows metrics.names; off: the demand gauges alone
    renamed = "--set=metrics.names.kDeficit=my_cut_total"
    assert (
        "my_cut_total{"
        in adapter_rules(load_docs(template("cut", scraped, renamed).stdout))[0]["metricsQuery"]
    )
    off = "--set=sampler.autoscaling.deficit.enabled=false"
    [rule] = adapter_rules(load_docs(template("cut", scraped, off).stdout))
    assert "deficit" not in rule["metricsQuery"] and "scalar" not in rule["metricsQuery"]
    keda = load_docs(template("cut", scraped, off, "--set=sampler.autoscaling.mode=keda").stdout)
    [trigger] = find(keda, "ScaledObject", "sampler")["spec"]["triggers"]
    assert "deficit" not in trigger["metadata"]["query"]
    # a rate needs a range
    bad = template("cut", "--set=sampler.autoscaling.deficit.window=", check=False)
    assert bad.returncode != 0 and "window" in bad.stderr


def test_event_loop_and_prefix_locality_reach_the_services() -> None:
    # Both default on in the services (uvloop, prefix locality); the chart states them so a
    # release can turn either off (e.g. to rule uvloop out) without knowing the env names.
    from grm.rpc.loop import CHOICES, ENV

    def envs(*extra: str) -> dict[str, dict[str, Any]]:
        docs = load_docs(template("loop", "--set=principles.enabled=true", *extra).stdout)
        return {
            part: env_of(container(find(docs, "Deployment", part), part))
            for part in ("aggregator", "principles", "sampler")
        }

    defaults = envs()
    assert {part: env[ENV] for part, env in defaults.items()} == dict.fromkeys(defaults, "uvloop")
    assert defaults["sampler"]["GRM_PREFIX_LOCALITY"] == "true"
    assert "GRM_PREFIX_LOCALITY" not in defaults["aggregator"]
    chosen = envs("--set=eventLoop=asyncio,sampler.eventLoop=auto,sampler.prefixLocality=false")
    assert [chosen[p][ENV] for p in ("aggregator", "principles", "sampler")] == [
        "asyncio", "asyncio", "auto",
    ]  # fmt: skip
    assert {env[ENV] for env in chosen.values()} <= set(CHOICES)
    assert chosen["sampler"]["GRM_PREFIX_LOCALITY"] == "false"
    for bad in ("eventLoop=libuv", "sampler.eventLoop=trio", "sampler.prefixLocality=maybe"):
        result = template("loop", f"--set={bad}", check=False)
        assert result.returncode != 0, bad


def test_cpu_demo_has_no_gpu(
    rendered: dict[str, list[dict[str, Any]]], rendered_text: dict[str, str]
) -> None:
    docs = rendered["cpu-demo"]
    assert (
        GPU not in rendered_text["cpu-demo"]
        and "text-generation-inference" not in rendered_text["cpu-demo"]
    )
    for doc in workloads(docs):
        spec = pod_spec(doc)
        assert (
            "nodeSelector" not in spec
            and "tolerations" not in spec
            and "runtimeClassName" not in spec
        )
    sampler = find(docs, "Deployment", "sampler")
    c = container(sampler, "sampler")
    assert c["image"] == "ghcr.io/grm-suite/grm:0.1.0-smollm2"
    env = env_of(c)
    assert env["GRM_N_THREADS"] == "2" and env["GRM_N_CTX"] == "4096" and "GRM_TGI_URL" not in env
    assert c["resources"]["limits"]["cpu"] == "2"
    _assert_demand_hpa(docs, 1, 4)
    _assert_cpu_hpa(docs)
    assert find(docs, "Deployment", "principles")
    agg_env = env_of(container(find(docs, "Deployment", "aggregator"), "aggregator"))
    assert agg_env["GRM_PRINCIPLES"] == ("cpu-demo-grm-principles.cpu-demo.svc:50052")
    assert agg_env["GRM_DECODING"] == "embedded"  # the tiny model keeps grammar and forcing


def test_minimal(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["minimal"]
    for kind in (
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "Role",
        "RoleBinding",
        "StatefulSet",
        "Secret",
        "ScaledObject",
    ):
        assert kinds(docs, kind) == [], kind
    agg = find(docs, "Deployment", "aggregator")
    assert pod_spec(agg)["automountServiceAccountToken"] is False
    env = env_of(container(agg, "aggregator"))
    assert (
        "GRM_SAMPLER_DISCOVERY" not in env
        and "GRM_REDIS_URL" not in env
        and "GRM_METRICS_PORT" not in env
    )
    sampler = find(docs, "Deployment", "sampler")
    assert sampler["spec"]["replicas"] == 3
    c = container(sampler, "sampler")
    assert env_of(c)["GRM_MODEL_PATH"] == "/models/deepseek-grm-q4_k_m.gguf"
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in c["volumeMounts"]
    volume = next(v for v in pod_spec(sampler)["volumes"] if v["name"] == "models")
    assert volume["persistentVolumeClaim"]["claimName"] == "grm-models"
    assert [p["name"] for p in c["ports"]] == ["grpc"]


# --- checkov --------------------------------------------------------------------------------------


def _skips() -> list[dict[str, str]]:
    skips = yaml.safe_load((ROOT / "tests" / "checkov-skips.yaml").read_text(encoding="utf-8"))[
        "skips"
    ]
    for skip in skips:
        assert set(skip) == {"check", "resource", "reason"}, skip
        assert len(skip["reason"].split()) >= 8, f"{skip['check']}: say why"
    return skips


def test_checkov(rendered_text: dict[str, str], tmp_path: Path) -> None:
    """One checkov run over every rendered scenario and docker/Dockerfile, offline."""
    for name, text in rendered_text.items():
        (tmp_path / f"{name}.yaml").write_text(text, encoding="utf-8")
    shutil.copy(ROOT / "docker" / "Dockerfile", tmp_path / "Dockerfile")
    result = subprocess.run(
        [
            str(tool(CHECKOV, "checkov")),
            "--skip-download",
            "--directory",
            str(tmp_path),
            "--framework",
            "kubernetes",
            "dockerfile",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )
    assert result.returncode in (0, 1), result.stderr[-2000:]
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    by_type = {r["check_type"]: r for r in reports}
    assert set(by_type) == {"kubernetes", "dockerfile"}
    assert by_type["dockerfile"]["summary"]["passed"] > 20
    assert by_type["kubernetes"]["summary"]["resource_count"] > 100
    assert by_type["kubernetes"]["summary"]["parsing_errors"] == 0
    skips = _skips()
    used = [False] * len(skips)
    unexplained = []
    for report in reports:
        for failed in report["results"]["failed_checks"]:
            hits = [
                n
                for n, s in enumerate(skips)
                if s["check"] == failed["check_id"]
                and re.fullmatch(s["resource"], failed["resource"])
            ]
            for n in hits:
                used[n] = True
            if not hits:
                unexplained.append(
                    f"{failed['check_id']} {failed['check_name']}: {failed['resource']}"
                )
    assert unexplained == [], "\n".join(unexplained)
    stale = [f"{s['check']} {s['resource']}" for s, u in zip(skips, used, strict=True) if not u]
    assert stale == [], "skips that match no finding: remove them"
