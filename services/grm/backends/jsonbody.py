"""Engine request and reply bodies, written and parsed quickly.

A TGI `/generate` reply with `details` carries one object per generated token: a 300-token
critique is a ~25 KB body, which the standard library's parser takes ~200 µs to read and
orjson ~70 µs — on every sample, more than the rest of a sampler's work on it. orjson is
stricter than the standard parser (it refuses lone-surrogate escapes and NaN literals), so a
body it refuses is read again by `json.loads`, which accepts what the engines' Python servers
can write, and raises ValueError for what is not JSON. (An integer beyond 64 bits comes back
as a float; the reply checks then refuse it as a wrong type — engines' seeds and counts are
64-bit.)

Request bodies are written by orjson (UTF-8, compact) too; a text it refuses (a lone
surrogate, which no UTF-8 encoder can write) is written by `json.dumps` with ASCII escapes,
which carry it as the standard library's client did.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def loads(raw: bytes | str) -> Any:
    """The JSON value of an engine's reply body (ValueError when it is not JSON)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def loads_strict(raw: bytes | str) -> Any:
    """orjson only (ValueError for anything it refuses): for a caller with a fallback."""
    return orjson.loads(raw)


def dumps(body: Any) -> bytes:
    """A request body as JSON bytes."""
    try:
        return orjson.dumps(body)
    except TypeError:  # orjson.JSONEncodeError: e.g. a lone surrogate in a string
        return json.dumps(body, separators=(",", ":")).encode()
