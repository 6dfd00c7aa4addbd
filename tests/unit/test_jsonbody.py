"""Engine bodies: the fast parser and writer, and the standard ones for what they refuse."""

from __future__ import annotations

import json
import math

import pytest

from grm.backends import jsonbody


def test_a_tgi_reply_reads_as_the_standard_parser_reads_it() -> None:
    tokens = [{"id": i, "text": f" w{i}", "logprob": -0.25, "special": False} for i in range(300)]
    body = {
        "generated_text": "Analysis: … «ok» 🙂\nScores: \\boxed{7, 3}",
        "details": {
            "finish_reason": "eos_token",
            "generated_tokens": 300,
            "seed": 7,
            "prefill": [],
            "tokens": tokens,
        },
    }
    for raw in (json.dumps(body).encode(), json.dumps(body, ensure_ascii=False).encode()):
        assert jsonbody.loads(raw) == json.loads(raw) == body


@pytest.mark.parametrize(
    "raw",
    [
        b'{"generated_text": "half a pair \\ud800"}',  # a lone surrogate (Python json writes it)
        b'{"logprob": NaN}',
    ],
)
def test_what_the_fast_parser_refuses_the_standard_one_reads(raw: bytes) -> None:
    expected = json.loads(raw)
    got = jsonbody.loads(raw)
    if "logprob" in expected:
        assert math.isnan(got["logprob"])
    else:
        assert got == expected


def test_64_bit_seeds_stay_integers() -> None:
    raw = b'{"seed": 18446744073709551615, "generated_tokens": 300}'  # TGI's seed is a u64
    got = jsonbody.loads(raw)
    assert got == {"seed": 2**64 - 1, "generated_tokens": 300}
    assert all(type(v) is int for v in got.values())


@pytest.mark.parametrize("raw", [b"", b"<html>502 Bad Gateway</html>", b'{"a": 1', b"\xff\xfe"])
def test_a_body_that_is_not_json_is_a_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        jsonbody.loads(raw)


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": "Réponse «ok» 🙂\nScores:", "parameters": {"seed": 2**31, "top_p": 0.95}},
        {"inputs": "half a pair \ud800 of surrogates"},  # no UTF-8 encoder can write it
        {"messages": [{"role": "user", "content": ""}], "max_tokens": 1, "stop": None},
    ],
)
def test_request_bodies_read_back_as_written(body: dict[str, object]) -> None:
    raw = jsonbody.dumps(body)
    assert isinstance(raw, bytes) and json.loads(raw) == body
    raw.decode("utf-8")  # what an engine's server decodes it as
