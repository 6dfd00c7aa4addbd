"""A few Prometheus metrics under TGI's names, rendered in the text exposition format.

Hand-rolled (a dozen lines) rather than a dependency: the dev server needs counters, gauges
and histograms with TGI's names (`tgi_request_count`, `tgi_queue_size`,
`tgi_request_duration`, ...) so dashboards and autoscaling rules written for TGI read it.
"""

from __future__ import annotations

import bisect
from collections import defaultdict

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)

HELP = {
    "tgi_request_count": ("counter", "Generate requests received"),
    "tgi_request_success": ("counter", "Generate requests answered with 200"),
    "tgi_request_failure": ("counter", "Generate requests that failed, by error type"),
    "tgi_queue_size": ("gauge", "Admitted requests waiting for the model"),
    "tgi_batch_current_size": ("gauge", "Requests the model is running now"),
    "tgi_request_in_flight": ("gauge", "Admitted requests (bounded by max_concurrent_requests)"),
    "tgi_request_duration": ("histogram", "End-to-end request duration (seconds)"),
    "tgi_request_validation_duration": ("histogram", "Validation duration (seconds)"),
    "tgi_request_queue_duration": ("histogram", "Time waiting for the model (seconds)"),
    "tgi_request_inference_duration": ("histogram", "Generation duration (seconds)"),
    "tgi_request_generated_tokens": ("histogram", "Generated tokens per request"),
    "tgi_request_input_length": ("histogram", "Prompt tokens per request"),
    "tgi_request_max_new_tokens": ("histogram", "max_new_tokens per request"),
}


class Metrics:
    """Counters, gauges and histograms; single-threaded (the server's event loop)."""

    def __init__(self) -> None:
        self.counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)
        self.gauges: dict[str, float] = {}
        self.histograms: dict[str, tuple[tuple[float, ...], list[int], list[float]]] = {}

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        self.counters[(name, tuple(sorted(labels.items())))] += value

    def set_gauge(self, name: str, value: float) -> None:
        self.gauges[name] = value

    def observe(self, name: str, value: float) -> None:
        if name not in self.histograms:
            buckets = DURATION_BUCKETS if name.endswith("duration") else TOKEN_BUCKETS
            self.histograms[name] = (buckets, [0] * (len(buckets) + 1), [0.0, 0.0])
        buckets, counts, sums = self.histograms[name]
        counts[bisect.bisect_left(buckets, value)] += 1
        sums[0] += value
        sums[1] += 1

    def counter(self, name: str, **labels: str) -> float:
        return self.counters.get((name, tuple(sorted(labels.items()))), 0.0)

    def render(self) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        lines: list[str] = []
        seen: set[str] = set()

        def header(name: str) -> None:
            if name not in seen:
                seen.add(name)
                kind, text = HELP.get(name, ("untyped", name))
                lines.append(f"# HELP {name} {text}")
                lines.append(f"# TYPE {name} {kind}")

        for (name, labels), value in sorted(self.counters.items()):
            header(name)
            label = ",".join(f'{k}="{v}"' for k, v in labels)
            lines.append(f"{name}{{{label}}} {value:g}" if label else f"{name} {value:g}")
        for name, value in sorted(self.gauges.items()):
            header(name)
            lines.append(f"{name} {value:g}")
        for name, (buckets, counts, sums) in sorted(self.histograms.items()):
            header(name)
            total = 0
            for bound, count in zip(buckets, counts, strict=False):
                total += count
                lines.append(f'{name}_bucket{{le="{bound:g}"}} {total}')
            lines.append(f'{name}_bucket{{le="+Inf"}} {int(sums[1])}')
            lines.append(f"{name}_sum {sums[0]:g}")
            lines.append(f"{name}_count {int(sums[1])}")
        return "\n".join(lines) + "\n"
