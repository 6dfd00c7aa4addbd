"""The chart's GPU engines, model cache and autoscaling feeds, checked on the rendered output.

Rendered with the pinned helm exactly as tests/chart/test_helm_chart.py renders (its scenarios and
helpers are imported):
- every engine container against what its image really does (ENGINE_FACTS, with sources);
- the model cache: mounted where each engine looks, per pool, pre-download Job as a hook;
- each autoscaler's metric followed end to end, exported name -> scrape object selecting
  those pods and that port -> adapter rule or KEDA query -> HPA metric, in every scenario;
- the values JSON schema cannot check (min > max, duplicate pools) failing with a message.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.support.helm import (
    CHART,
    GPU,
    SCENARIOS,
    adapter_rules,
    all_containers,
    arg_after,
    container,
    env_of,
    find,
    helm,
    hpa_for,
    is_engine,
    kinds,
    load_docs,
    pod_spec,
    template,
    workloads,
)

# What each engine image does, and where that is stated upstream. The chart README's
# "Engine facts" table says the same; the chart must follow it.
ENGINE_FACTS: dict[str, dict[str, Any]] = {
    "tgi": {
        "image": "ghcr.io/huggingface/text-generation-inference:3.3.7",
        # Dockerfile has no USER, puts Python under /root/.local and sets LD_LIBRARY_PATH
        # there: non-root fails to load libpython (issue #3082, open).
        "user": 0,
        "non_root": False,
        "port": 8080,  # passed as --port; the image's PORT=80 needs CAP_NET_BIND_SERVICE
        "metrics_port": 9000,  # launcher --prometheus-port default, its own listener
        "health": "/health",
        "cache": "/data",  # Dockerfile: ENV HF_HOME=/data
        "queue_metric": "tgi_queue_size",  # docs/source/reference/metrics.md
        "source": "huggingface/text-generation-inference v3.3.7: Dockerfile, "
        "launcher/src/main.rs, router/src/server.rs, docs/source/reference/metrics.md, #3082",
    },
    "vllm": {
        "image": "docker.io/vllm/vllm-openai:v0.33.0",
        # docs/deployment/docker.md: root by default, prepared to run as `vllm` (2000:0)
        "user": 2000,
        "group": 0,
        "non_root": True,
        "port": 8000,
        "metrics_port": 8000,  # /metrics on the API server's port
        "health": "/health",
        "cache": "/home/vllm/.cache/huggingface",  # the vllm user's HF cache
        "queue_metric": "vllm:num_requests_waiting",  # docs/usage/metrics.md
        "source": "vllm-project/vllm: docs/deployment/docker.md, docs/deployment/k8s.md, "
        "docs/usage/metrics.md, docker/Dockerfile (useradd --uid 2000 --gid 0 vllm)",
    },
    "sglang": {
        "image": "docker.io/lmsysorg/sglang:v0.5.23",
        "user": 0,  # docker/Dockerfile has no USER
        "non_root": False,
        "port": 30000,
        "metrics_port": 30000,  # /metrics on the server port with --enable-metrics
        "health": "/health",
        "cache": "/root/.cache/huggingface",  # docker/k8s-sglang-service.yaml mounts it here
        "queue_metric": "sglang:num_queue_reqs",  # docs/references/production_metrics.md
        "source": "sgl-project/sglang: docker/Dockerfile, docker/k8s-sglang-service.yaml, "
        "docs/advanced_features/observability.md, docs/references/production_metrics.md",
    },
}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    from tests.support.helm import scenario_args

    return {name: load_docs(template(name, *scenario_args(name)).stdout) for name in SCENARIOS}


def engine_containers(docs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(d, c) for d in workloads(docs) for c in all_containers(d) if is_engine(c)]


def values(*sets: str) -> list[dict[str, Any]]:
    args = [a for s in sets for a in ("--set", s)]
    return load_docs(template("eng", *args).stdout)


def test_the_facts_table_is_the_chart_readme_table() -> None:
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    for kind, fact in ENGINE_FACTS.items():
        assert fact["image"].split("/", 1)[1] in readme, kind
        assert fact["queue_metric"] in readme and fact["cache"] in readme, kind
    chart_values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))["engine"]
    for kind, fact in ENGINE_FACTS.items():
        image = chart_values[kind]["image"]
        assert f"{image['repository']}:{image['tag']}" == fact["image"], kind
        assert chart_values[kind]["port"] == fact["port"], kind
        assert chart_values[kind]["queueMetric"] == fact["queue_metric"], kind


# --- every engine container, as its image runs ---------------------------------------------


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_engine_containers_run_as_their_images_do(
    rendered: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    for doc, c in engine_containers(rendered[scenario]):
        fact = ENGINE_FACTS[c["name"]]
        where = f"{scenario} {doc['metadata']['name']}/{c['name']}"
        assert c["image"] == fact["image"], where
        sc = c["securityContext"]
        # the image's user, never forced to the grm UID (TGI >= 3.1 cannot start as 10001)
        assert sc["runAsUser"] == fact["user"] and sc["runAsNonRoot"] is fact["non_root"], where
        if "group" in fact:
            assert sc["runAsGroup"] == fact["group"], where
        assert sc["allowPrivilegeEscalation"] is False, where
        assert sc["capabilities"] == {"drop": ["ALL"]}, where
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["engine-http"] == fact["port"], where
        metrics_port = "engine-metrics" if c["name"] == "tgi" else "engine-http"
        assert ports[metrics_port] == fact["metrics_port"], where
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"] == {"path": fact["health"], "port": "engine-http"}, where
        # the model cache is mounted where the engine looks, and HF_HOME says so
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        assert mounts[fact["cache"]] == "model-cache", where
        assert env_of(c)["HF_HOME"] == fact["cache"], where
        assert int(c["resources"]["limits"][GPU]) >= 1, where
        # the grm containers of the same pod stay non-root with a read-only root
        for other in all_containers(doc):
            if not is_engine(other):
                osc = other["securityContext"]
                assert osc["runAsNonRoot"] is True and osc["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("kind", list(ENGINE_FACTS))
def test_each_engine_in_the_default_sidecar(kind: str) -> None:
    docs = values(f"engine.kind={kind}", "engine.gpus=2")
    sampler = find(docs, "Deployment", "sampler")
    spec = pod_spec(sampler)
    [engine] = spec["initContainers"]
    assert engine["name"] == kind and engine["restartPolicy"] == "Always"
    port = ENGINE_FACTS[kind]["port"]
    env = env_of(container(sampler, "sampler"))
    args = engine["args"]
    if kind == "tgi":
        assert env["GRM_BACKEND"] == "tgi" and env["GRM_TGI_URL"] == f"http://127.0.0.1:{port}"
        assert arg_after(args, "--model-id") == "Qwen/Qwen2.5-7B-Instruct"
        assert arg_after(args, "--num-shard") == "2"
        assert arg_after(args, "--prometheus-port") == "9000"
    else:
        assert env["GRM_BACKEND"] == "openai" and env["GRM_ENGINE"] == kind
        assert env["GRM_OPENAI_URL"] == f"http://127.0.0.1:{port}/v1"
        assert "GRM_TGI_URL" not in env
        assert arg_after(args, "--served-model-name") == "Qwen/Qwen2.5-7B-Instruct"
        assert arg_after(args, "--port") == str(port)
    if kind == "vllm":
        assert engine["command"] == ["vllm", "serve"]
        assert arg_after(args, "--model") == "Qwen/Qwen2.5-7B-Instruct"
        assert arg_after(args, "--max-model-len") == "8192"
        assert arg_after(args, "--gpu-memory-utilization") == "0.90"
        assert arg_after(args, "--tensor-parallel-size") == "2"
    if kind == "sglang":
        assert engine["command"] == ["python3", "-m", "sglang.launch_server"]
        assert arg_after(args, "--model-path") == "Qwen/Qwen2.5-7B-Instruct"
        assert arg_after(args, "--tp") == "2" and "--enable-metrics" in args
    assert re.fullmatch(r"[0-9a-f]{40}", arg_after(args, "--revision"))


def test_strategy_is_configurable() -> None:
    docs = values("sampler.strategy.type=Recreate")
    assert find(docs, "Deployment", "sampler")["spec"]["strategy"] == {"type": "Recreate"}
    cpu = values("sampler.backend=embedded")
    assert "strategy" not in find(cpu, "Deployment", "sampler")["spec"]  # CPU pods: the default


# --- model cache --------------------------------------------------------------------------


def test_cache_pvc_per_pool_with_the_pre_download_hook(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["gke-vllm"]
    claims = {d["metadata"]["name"]: d for d in kinds(docs, "PersistentVolumeClaim")}
    assert set(claims) == {"gke-vllm-grm-model-cache-l4", "gke-vllm-grm-model-cache-a100"}
    jobs = {d["metadata"]["name"]: d for d in kinds(docs, "Job")}
    for pool in ("l4", "a100"):
        claim = claims[f"gke-vllm-grm-model-cache-{pool}"]
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
        assert claim["spec"]["storageClassName"] == "standard-rwx"
        # the claim exists before the hook Job that fills it, and outlives the release
        assert claim["metadata"]["annotations"]["helm.sh/hook"] == "pre-install"
        assert int(claim["metadata"]["annotations"]["helm.sh/hook-weight"]) < 0
        assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        deployment = find(docs, "Deployment", f"engine-{pool}")
        volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == "model-cache")
        assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
        job = jobs[f"gke-vllm-grm-model-download-{pool}"]
        assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert int(job["metadata"]["annotations"]["helm.sh/hook-weight"]) >= 0
        [download] = pod_spec(job)["containers"]
        assert download["image"].startswith("ghcr.io/grm-suite/grm:")
        assert download["args"][:2] == [
            "Qwen/Qwen2.5-7B-Instruct",
            "a09a35458c702b33eeacc393d103063234e8bc28",
        ]
        assert env_of(download)["HF_TOKEN"] == {
            "secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN"}
        }
        job_volume = next(v for v in pod_spec(job)["volumes"] if v["name"] == "model-cache")
        assert job_volume == volume
        sc = download["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True


def test_cache_kinds_offline_and_existing_claims() -> None:
    docs = values("engine.cache.type=existingClaim,engine.cache.existingClaim=weights")
    volume = next(
        v
        for v in pod_spec(find(docs, "Deployment", "sampler"))["volumes"]
        if v["name"] == "model-cache"
    )
    assert volume == {"name": "model-cache", "persistentVolumeClaim": {"claimName": "weights"}}
    assert kinds(docs, "PersistentVolumeClaim") == []
    docs = values("engine.cache.type=hostPath,engine.cache.offline=true")
    sampler = find(docs, "Deployment", "sampler")
    volume = next(v for v in pod_spec(sampler)["volumes"] if v["name"] == "model-cache")
    assert volume["hostPath"] == {"path": "/var/lib/grm/model-cache", "type": "DirectoryOrCreate"}
    assert env_of(container(sampler, "tgi"))["HF_HUB_OFFLINE"] == "1"
    # without a predownload Job the chart's claim is an ordinary, kept resource
    docs = values("engine.cache.type=pvc")
    [claim] = kinds(docs, "PersistentVolumeClaim")
    assert "helm.sh/hook" not in claim["metadata"]["annotations"]
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    bad = template("eng", "--set", "engine.cache.predownload.enabled=true", check=False)
    assert bad.returncode != 0 and "predownload needs engine.cache.type pvc" in bad.stderr
    missing = template("eng", "--set", "engine.cache.type=existingClaim", check=False)
    assert missing.returncode != 0 and "engine.cache.existingClaim is required" in missing.stderr


def test_pools_override_model_and_cache() -> None:
    docs = load_docs(
        template(
            "eng",
            "--set-json",
            'engine.nodePools=[{"name":"a","replicas":0},{"name":"b","model":{"id":"org/m",'
            '"revision":"abc"},"cache":{"type":"existingClaim","existingClaim":"b-weights"}}]',
            "--set",
            "engine.mode=nodePools,engine.kind=vllm",
        ).stdout
    )
    a, b = find(docs, "Deployment", "engine-a"), find(docs, "Deployment", "engine-b")
    assert a["spec"]["replicas"] == 0, "replicas: 0 is honoured"
    assert arg_after(container(b, "vllm")["args"], "--model") == "org/m"
    assert arg_after(container(b, "vllm")["args"], "--served-model-name") == "org/m"
    assert arg_after(container(a, "vllm")["args"], "--model") == "Qwen/Qwen2.5-7B-Instruct"
    claim = next(v for v in pod_spec(b)["volumes"] if v["name"] == "model-cache")
    assert claim["persistentVolumeClaim"]["claimName"] == "b-weights"
    env = env_of(container(find(docs, "Deployment", "sampler"), "sampler"))
    assert env["GRM_OPENAI_URL"] == (
        "http://eng-grm-engine-a.eng.svc:8000/v1,http://eng-grm-engine-b.eng.svc:8000/v1"
    )


# --- autoscaler metrics, end to end ------------------------------------------------------------


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In", expr
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def _pod_labels(doc: dict[str, Any]) -> dict[str, str]:
    return doc["spec"]["template"]["metadata"]["labels"]


def _scraped(docs: list[dict[str, Any]], target: dict[str, Any], ns: str) -> set[tuple[str, int]]:
    """(container name, port) pairs of `target`'s pods that a rendered scrape object scrapes at
    /metrics: ServiceMonitor -> Service selecting the pods -> targetPort -> container port, or
    PodMonitor -> container port name."""
    out: set[tuple[str, int]] = set()
    pod_labels = _pod_labels(target)
    named = {
        p["name"]: (c["name"], p["containerPort"])
        for c in all_containers(target)
        for p in c["ports"]
    }
    for monitor in kinds(docs, "ServiceMonitor"):
        assert monitor["spec"]["namespaceSelector"]["matchNames"] == [ns]
        for service in kinds(docs, "Service"):
            if not _matches(monitor["spec"]["selector"], service["metadata"]["labels"]):
                continue
            if not _matches({"matchLabels": service["spec"]["selector"]}, pod_labels):
                continue
            for endpoint in monitor["spec"]["endpoints"]:
                assert endpoint["path"] == "/metrics"
                for port in service["spec"]["ports"]:
                    if port["name"] == endpoint["port"] and port["targetPort"] in named:
                        out.add(named[port["targetPort"]])
    for monitor in kinds(docs, "PodMonitor"):
        assert monitor["spec"]["namespaceSelector"]["matchNames"] == [ns]
        if _matches(monitor["spec"]["selector"], pod_labels):
            for endpoint in monitor["spec"]["podMetricsEndpoints"]:
                assert endpoint["path"] == "/metrics"
                if endpoint["port"] in named:
                    out.add(named[endpoint["port"]])
    return out


def _sampler_metrics_port(sampler: dict[str, Any]) -> tuple[str, int]:
    port = int(env_of(container(sampler, "sampler"))["GRM_METRICS_PORT"])  # where it serves
    return ("sampler", port)


def _engine_metrics_port(doc: dict[str, Any]) -> tuple[str, int]:
    [engine] = [c for c in all_containers(doc) if is_engine(c)]
    return (engine["name"], ENGINE_FACTS[engine["name"]]["metrics_port"])


def _series(promql: str) -> set[str]:
    names = set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", promql))
    return names - {"avg_over_time", "sum", "avg", "clamp_min"}


def _deficit_is_scraped(docs: list[dict[str, Any]], promql: str, ns: str) -> None:
    """A query that counts the k deficit reads the aggregators' counter: their metrics port is
    scraped and the query selects this release's aggregator pods."""
    if "grm_k_deficit_total" not in promql:
        return
    aggregator = find(docs, "Deployment", "aggregator")
    port = int(env_of(container(aggregator, "aggregator"))["GRM_METRICS_PORT"])
    assert ("aggregator", port) in _scraped(docs, aggregator, ns)
    pod_re = re.search(r'grm_k_deficit_total\{[^}]*pod=~"([^"]+)"', promql).group(1)
    assert re.fullmatch(pod_re, aggregator["metadata"]["name"] + "-6d4cf9b7c5-x2x8q")


def _follow_sampler(docs: list[dict[str, Any]], ns: str) -> str:
    chart_values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    names = chart_values["metrics"]["names"]
    gauges = set(names.values()) | {chart_values["sampler"]["autoscaling"]["metric"]["name"]}
    # a histogram's series (the mean generation time of the k deficit term)
    gauges |= {names["stageDuration"] + "_sum", names["stageDuration"] + "_count"}
    sampler = find(docs, "Deployment", "sampler")
    scaled = find(docs, "ScaledObject", "sampler") if kinds(docs, "ScaledObject") else None
    hpa = hpa_for(docs, "sampler")
    if scaled is None and hpa is None:
        return "none"
    if scaled is not None:
        assert scaled["spec"]["scaleTargetRef"]["name"] == sampler["metadata"]["name"]
        [trigger] = scaled["spec"]["triggers"]
        if trigger["type"] == "cpu":
            assert _sampler_metrics_port(sampler) not in _scraped(docs, sampler, ns)
            return "cpu"
        # KEDA query: the sampler gauges of this release's pods ...
        query = trigger["metadata"]["query"]
        assert _series(query) <= gauges and "grm_sampler_capacity" in query
        pod_re = re.search(r'pod=~"([^"]+)"', query).group(1)
        assert re.fullmatch(pod_re, sampler["metadata"]["name"] + "-6d4cf9b7c5-x2x8q")
        assert f'namespace="{ns}"' in query
        # ... scraped from the port the sampler serves them on ...
        assert _sampler_metrics_port(sampler) in _scraped(docs, sampler, ns)
        _deficit_is_scraped(docs, query, ns)
        # ... against the HPA's ratio target, with a fallback while the query fails
        target = chart_values["sampler"]["autoscaling"]["metric"]["targetAverageValue"]
        ratio = float(target[:-1]) / 1000 if target.endswith("m") else float(target)
        assert float(trigger["metadata"]["threshold"]) == ratio
        assert scaled["spec"]["fallback"]["replicas"] >= 1
        return "keda"
    assert hpa["spec"]["scaleTargetRef"]["name"] == sampler["metadata"]["name"]
    [metric] = hpa["spec"]["metrics"]
    if metric["type"] == "Resource":
        assert metric["resource"]["name"] == "cpu"
        # the fallback only when something in the demand path is missing
        fed = _sampler_metrics_port(sampler) in _scraped(docs, sampler, ns) and any(
            r["name"]["matches"].strip("^$") in gauges for r in adapter_rules(docs)
        )
        assert not fed
        return "cpu"
    name = metric["pods"]["metric"]["name"]
    [rule] = [r for r in adapter_rules(docs) if r["name"]["as"] == name]
    assert name not in gauges, "the adapter serves it under its own name"
    discovered = _series(rule["seriesQuery"])
    assert discovered <= gauges and re.fullmatch(rule["name"]["matches"], next(iter(discovered)))
    assert _series(rule["metricsQuery"].replace("<<.LabelMatchers>>", "")) <= gauges
    _deficit_is_scraped(docs, rule["metricsQuery"], ns)
    assert rule["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"},
        "pod": {"resource": "pod"},
    }
    assert _sampler_metrics_port(sampler) in _scraped(docs, sampler, ns)
    return "hpa"


def _follow_engine_pools(docs: list[dict[str, Any]], ns: str) -> list[str]:
    seen = []
    for hpa in kinds(docs, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]["name"]
        if "-grm-engine-" not in target:
            continue
        [deployment] = [d for d in kinds(docs, "Deployment") if d["metadata"]["name"] == target]
        [metric] = hpa["spec"]["metrics"]
        scraped = _engine_metrics_port(deployment) in _scraped(docs, deployment, ns)
        if metric["type"] == "Resource":
            assert not (scraped and adapter_rules(docs))
            seen.append("cpu")
            continue
        name = metric["pods"]["metric"]["name"]
        [rule] = [r for r in adapter_rules(docs) if r["name"]["as"] == name]
        [engine] = [c for c in all_containers(deployment) if is_engine(c)]
        gauge = ENGINE_FACTS[engine["name"]]["queue_metric"]
        assert _series(rule["seriesQuery"]) == {gauge} != {name}
        assert _series(rule["metricsQuery"].replace("<<.LabelMatchers>>", "")) == {gauge}
        assert scraped, f"{target}: no scrape object reaches the engine's metrics port"
        seen.append("hpa")
    return seen


EXPECTED_FEEDS = {
    "defaults": ("cpu", []),
    "prometheus": ("hpa", []),
    "gke-vllm": ("hpa", ["hpa"]),
    "eks-sglang": ("keda", []),
    "onprem-tgi": ("hpa", []),
    "tgi-sidecar": ("hpa", []),
    "tgi-nodepools": ("hpa", ["hpa"]),
    "external-redis": ("cpu", []),
    "keda": ("keda", []),
    "cpu-demo": ("hpa", []),
    "minimal": ("none", []),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_autoscaler_metric_is_fed_end_to_end(
    rendered: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    assert set(EXPECTED_FEEDS) == set(SCENARIOS)
    docs = rendered[scenario]
    sampler, pools = EXPECTED_FEEDS[scenario]
    assert _follow_sampler(docs, scenario) == sampler
    assert _follow_engine_pools(docs, scenario) == pools


def test_a_broken_feed_fails_the_chain(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The follower notices a scrape object on the wrong port or a renamed rule."""
    import copy

    docs = copy.deepcopy(rendered["tgi-sidecar"])
    [monitor] = kinds(docs, "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["port"] = "grpc"
    with pytest.raises(AssertionError):
        _follow_sampler(docs, "tgi-sidecar")
    docs = copy.deepcopy(rendered["tgi-nodepools"])
    [monitor] = kinds(docs, "PodMonitor")
    monitor["spec"]["podMetricsEndpoints"][0]["port"] = "engine-http"  # TGI: not /metrics
    with pytest.raises(AssertionError):
        _follow_engine_pools(docs, "tgi-nodepools")


def test_scrape_objects_carry_the_prometheus_selector_label(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    for scenario in ("gke-vllm", "eks-sglang", "onprem-tgi", "keda"):
        for monitor in kinds(rendered[scenario], "ServiceMonitor") + kinds(
            rendered[scenario], "PodMonitor"
        ):
            assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack", scenario


def test_notes_say_why_the_sampler_scales_on_cpu() -> None:
    out = helm("install", "grm", str(CHART), "--namespace", "ns1", "--dry-run=client").stdout
    notes = out[out.index("NOTES:") :]
    assert "scales on CPU" in notes and "no ServiceMonitor is rendered" in notes
    assert "every new pod downloads the model" in notes
    out = helm(
        "install", "grm", str(CHART), "-n", "ns1", "--dry-run=client", "--set",
        "metrics.serviceMonitor.enabled=true,metrics.prometheusAdapter.rules=false",
    ).stdout  # fmt: skip
    assert "metrics.prometheusAdapter.rules is false" in out[out.index("NOTES:") :]


def test_engine_pool_metrics_rule_with_empty_metrics_from_is_any_source(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    policy = find(rendered["tgi-nodepools"], "NetworkPolicy", "engine-l4")
    [rule] = [r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == "engine-metrics"]
    assert "from" not in rule  # metricsFrom is empty: any source, as documented


# --- what JSON schema cannot say ------------------------------------------------------------


@pytest.mark.parametrize(
    ("sets", "complaint"),
    [
        (
            ["sampler.autoscaling.minReplicas=9,sampler.autoscaling.maxReplicas=4"],
            "minReplicas (9) must not exceed sampler.autoscaling.maxReplicas (4)",
        ),
        (
            ["aggregator.autoscaling.minReplicas=5,aggregator.autoscaling.maxReplicas=2"],
            "aggregator.autoscaling.minReplicas (5) must not exceed",
        ),
        (
            ["engine.mode=nodePools,engine.nodePools[0].name=l4,engine.nodePools[1].name=l4"],
            'the pool name "l4" appears more than once',
        ),
        (
            [
                "engine.mode=nodePools,engine.nodePools[0].name=l4,"
                "engine.nodePools[0].replicas=5,engine.nodePools[0].maxReplicas=3"
            ],
            "engine.nodePools[l4]: replicas (5, the HPA's minimum) must not exceed maxReplicas (3)",
        ),
        (["sampler.autoscaling.minReplicas=0"], "at least 1 with mode hpa"),
    ],
)
def test_template_time_checks_fail_with_a_message(sets: list[str], complaint: str) -> None:
    result = template("bad", *[a for s in sets for a in ("--set", s)], check=False)
    assert result.returncode != 0, f"{sets} rendered"
    assert complaint in result.stderr, result.stderr


@pytest.mark.parametrize(
    "setting",
    [
        "engine.shmSize=0.8x",
        "engine.resources.requests.cpu=0.8x",
        "engine.cache.size=100GB",
        "sampler.autoscaling.metric.targetAverageValue=1.2.3",
    ],
)
def test_a_bad_quantity_fails(setting: str) -> None:
    result = template("bad", "--set", setting, check=False)
    assert result.returncode != 0, f"--set {setting} rendered"
    assert "schema" in result.stderr and setting.split("=")[0].split(".")[-1] in result.stderr


def test_good_quantities_pass() -> None:
    for setting in (
        "engine.shmSize=512Mi",
        "engine.resources.requests.cpu=1500m",
        "engine.cache.size=1.5Ti",
    ):
        template("good", "--set", setting)


@pytest.mark.parametrize(
    "setting",
    ["sampler.settings.concurrency=many", "aggregator.settings.max-k=true"],
)
def test_settings_values_are_typed(setting: str) -> None:
    result = template("bad", "--set", setting, check=False)
    assert result.returncode != 0 and "schema" in result.stderr


def test_replicas_zero_is_honoured() -> None:
    docs = values("sampler.autoscaling.mode=none,sampler.replicaCount=0")
    assert find(docs, "Deployment", "sampler")["spec"]["replicas"] == 0


@pytest.mark.parametrize(
    ("apis", "metric_type"),
    [
        ((), "Resource"),
        (("monitoring.coreos.com/v1/ServiceMonitor",), "Resource"),  # no adapter in the cluster
        (("monitoring.coreos.com/v1/ServiceMonitor", "custom.metrics.k8s.io/v1beta1"), "Pods"),
    ],
)
def test_auto_reads_the_demand_metric_only_where_the_cluster_can_serve_it(
    apis: tuple[str, ...], metric_type: str
) -> None:
    args = [a for api in apis for a in ("--api-versions", api)]
    docs = load_docs(template("auto", *args).stdout)
    [metric] = hpa_for(docs, "sampler")["spec"]["metrics"]
    assert metric["type"] == metric_type
    assert bool(kinds(docs, "ServiceMonitor")) is bool(apis)
    # once monitoring exists, the scrape objects carry kube-prometheus-stack's selector label
    for monitor in kinds(docs, "ServiceMonitor"):
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


@pytest.mark.parametrize(("scenario", "kind"), [("gke-vllm", "vllm"), ("eks-sglang", "sglang")])
def test_vllm_and_sglang_ci_values_render_complete_gpu_pods(
    rendered: dict[str, list[dict[str, Any]]], scenario: str, kind: str
) -> None:
    docs = rendered[scenario]
    engines = engine_containers(docs)
    assert engines and {c["name"] for _, c in engines} == {kind}
    for doc, c in engines:
        assert int(c["resources"]["requests"][GPU]) >= 1
        assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(c)
        volume = next(v for v in pod_spec(doc)["volumes"] if v["name"] == "model-cache")
        assert "persistentVolumeClaim" in volume
        # a PodMonitor scrapes the engine where it serves /metrics
        assert _engine_metrics_port(doc) in _scraped(docs, doc, scenario)
    assert kinds(docs, "ServiceMonitor") and kinds(docs, "PodMonitor")
