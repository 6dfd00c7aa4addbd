"""Decoding defaults: the one place that says how a sample is decoded when a request does not.

Two profiles, chosen by what generates the samples:

- `served` (an engine: TGI, vLLM, SGLang, llama.cpp's server) — the paper's decoding:
  temperature 0.5, no constrained decoding, `max_new_tokens` 1024 (the paper's judgements
  average ~260-380 tokens per domain, with a long tail; the TGI backend caps it at what the
  engine advertises room for), and a sample cut at `max_new_tokens` (finish reason `length`)
  is invalid and re-drawn with a new seed, never completed with a forced score line.
- `embedded` (the bundled SmolLM2-135M in process) — a 135M model rarely writes the paper's
  format unaided, so its profile keeps the score-line grammar, 256 new tokens and a forced
  score line after a cut (`force_scores`).

Who applies them: the aggregator fills a request's unset fields from its `--decoding`
profile (default `served`; `grm up` passes the profile of the backend it starts) and sends
every field explicitly to the samplers, so the sample cache keys hold the values actually
used. A sampler or principle generator fills fields only for callers that leave them unset,
from its own backend's profile. `grm score` in process uses the profile of its backend;
`grm score --target` sends only the fields the user set, so the server's profile decides.
"""

from __future__ import annotations

from grm.core.types import SamplingParams

SERVED = "served"
EMBEDDED = "embedded"

PROFILES: dict[str, SamplingParams] = {
    SERVED: SamplingParams(),
    EMBEDDED: SamplingParams(max_new_tokens=256, grammar=True, force_scores=True),
}


def parse_profile(text: str) -> str:
    """A profile name from a flag or an environment variable."""
    value = text.strip().lower()
    if value not in PROFILES:
        raise ValueError(f"unknown decoding profile {text!r}; choose {' or '.join(PROFILES)}")
    return value


def profile_for_backend(backend: str) -> str:
    """The profile of a generation backend kind: the embedded model, or a served engine."""
    return EMBEDDED if backend == "embedded" else SERVED


def sampling_defaults(profile: str = SERVED) -> SamplingParams:
    """The decoding defaults of a profile."""
    return PROFILES[parse_profile(profile)]
