"""Reading a `/generate` reply without its per-token details: the same fields as a whole parse,
for TGI's layout and for every layout the shortcut must not be fooled by."""

from __future__ import annotations

import json
from typing import Any

import pytest

from grm.backends import jsonbody
from grm.backends.tgi import Generated, read_generated
from grm.core.errors import BackendError

TRICKY_TEXT = 'Analysis: he wrote ,"tokens":[ and }} here «ok» 🙂\nScores: \\boxed{7, 3}'


def _reply(text: str = TRICKY_TEXT, *, tokens: int = 300, **extra: Any) -> dict[str, Any]:
    details: dict[str, Any] = {
        "finish_reason": "eos_token",
        "generated_tokens": tokens,
        "seed": 18446744073709551615,
        "prefill": [],
        "tokens": [
            {"id": i, "text": f' ,"tokens":[{i}', "logprob": -0.5, "special": False}
            for i in range(tokens)
        ],
    }
    details.update(extra)
    return {"generated_text": text, "details": details}


def _tgi(value: Any) -> bytes:
    """As TGI's router writes it: serde_json, compact, UTF-8."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _fields(payload: Any) -> Generated | str:
    """What the backend makes of a reply: its fields, or the error it raises."""
    try:
        return Generated.from_payload(payload)
    except BackendError as exc:
        return str(exc)


@pytest.mark.parametrize(
    "raw",
    [
        _tgi(_reply()),
        _tgi(_reply(tokens=0)),
        _tgi(_reply(top_tokens=[[{"id": 1, "text": "a", "logprob": -1.0, "special": False}]])),
        _tgi(_reply(best_of_sequences=[_reply()["details"] | {"generated_text": "other"}])),
        json.dumps(_reply()).encode(),  # spaces: parsed whole
        json.dumps(_reply()).encode().replace(b'"generated_text"', b'"generated_text" '),
        _tgi({"details": _reply()["details"], "generated_text": TRICKY_TEXT}),  # other order
        _tgi({"generated_text": TRICKY_TEXT, "details": None}),
        json.dumps(_reply("half a pair \ud800")).encode(),  # a lone surrogate escape
    ],
)
def test_the_shortcut_reads_what_a_whole_parse_reads(raw: bytes) -> None:
    assert _fields(read_generated(raw)) == _fields(jsonbody.loads(raw))


def test_in_tgis_layout_the_tokens_are_not_parsed() -> None:
    raw = _tgi(_reply())
    head = read_generated(raw)
    assert "tokens" not in head["details"]
    assert _fields(head) == Generated(TRICKY_TEXT, 300, "eos_token", 2**64 - 1)
    # a token list the suite never reads may even be cut short
    broken = raw[: raw.rfind(b',"tokens":[') + 40]
    assert _fields(read_generated(broken)) == _fields(head)


@pytest.mark.parametrize(
    "raw",
    [b"", b"<html>502</html>", b'{"generated_text":"x","details":{"tokens":[', b'[{"a":1}]'],
)
def test_what_is_not_a_reply_is_a_value_error_or_refused_by_the_reply_checks(raw: bytes) -> None:
    try:
        payload = read_generated(raw)
    except ValueError:
        return
    with pytest.raises(Exception, match="does not fit"):
        Generated.from_payload(payload)
