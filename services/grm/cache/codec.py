"""Compact, self-checking values: a small header, then the grm.v1 protobuf message.

Header = magic (3 bytes) + encoding version + kind + 8 bytes of the key's digest. The tag ties
a value to the key it was written under, so a value written by another schema, another kind or
another program at the same key is recognised as foreign; decoding then checks the message
against what the caller asked for (n scores in 1..10, the same seed and order). Anything that
fails raises CorruptValueError: the caller counts it, ignores it and overwrites it.

The message <-> dataclass mapping is grm.rpc.convert's (the one place for it). That module also
holds the gRPC status helpers and imports grpc, so it is imported inside the functions here:
`import grm.cache` stays free of gRPC, as the layering wants.
"""

from __future__ import annotations

import struct
from dataclasses import replace
from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError, Message

from grm.cache.keys import Kind, key_tag
from grm.core.parsing import split_sections
from grm.core.types import Sample, SampleSpec, ScoreResult
from grm.scoring.principles import PrincipleSet
from grm.v1 import common_pb2, principle_pb2, reward_pb2

if TYPE_CHECKING:
    from collections.abc import Sequence

MAGIC = b"\xc7GR"
ENCODING_VERSION = 1
_KIND_BYTE = {Kind.PRINCIPLES: b"p", Kind.SAMPLE: b"s", Kind.RESULT: b"r"}
# A sample whose principles and critique are stored as their places in its text (each is a
# part of it for a sample a sampler draws; the critique is most of the text, so the value is
# about half the size): four offsets follow the header; GIVEN for principles that are the
# spec's (the request gave them), NOT_IN_TEXT for a part kept in its field. Finding a part is
# one substring search, where checking that parsing the text gives it back cost a parse per
# stored sample.
_SAMPLE_SECTIONS_AT = b"O"
_OFFSETS = struct.Struct("<4I")
NOT_IN_TEXT = 0xFFFFFFFF
GIVEN = 0xFFFFFFFE
# Written by earlier versions (still read): both parts are what parsing the text gives.
_SAMPLE_FROM_TEXT = b"S"
_HEADER_LEN = len(MAGIC) + 2 + 8


class CorruptValueError(ValueError):
    """A stored value that is not a valid value for its key."""


def _wrap(
    kind: Kind, key: str, msg: Message, kind_byte: bytes | None = None, extra: bytes = b""
) -> bytes:
    header = MAGIC + bytes([ENCODING_VERSION]) + (kind_byte or _KIND_BYTE[kind]) + key_tag(key)
    return header + extra + msg.SerializeToString()


def _unwrap(
    kind: Kind,
    key: str,
    data: bytes,
    message_type: type[Message],
    also: Sequence[bytes] = (),
    skip: int = 0,
) -> Message:
    """The message of a value of `kind` (or of a variant kind byte in `also`), after `skip`
    bytes that follow the header."""
    if len(data) < _HEADER_LEN + skip or not data.startswith(MAGIC):
        raise CorruptValueError("not a GRM cache value")
    if data[3] != ENCODING_VERSION:
        raise CorruptValueError(f"encoding version {data[3]}, expected {ENCODING_VERSION}")
    if data[4:5] != _KIND_BYTE[kind] and data[4:5] not in also:
        raise CorruptValueError(f"value of another kind ({data[4:5]!r})")
    if data[5:_HEADER_LEN] != key_tag(key):
        raise CorruptValueError("value was written under another key")
    msg = message_type()
    try:
        msg.ParseFromString(data[_HEADER_LEN + skip :])
    except DecodeError as exc:
        raise CorruptValueError(f"bad protobuf payload: {exc}") from exc
    return msg


def _check_scores(scores: Sequence[int], n: int) -> None:
    if len(scores) != n or not all(1 <= s <= 10 for s in scores):
        raise CorruptValueError(f"scores {list(scores)[:20]} are not {n} integers in 1..10")


# --- samples -------------------------------------------------------------------------------


def encode_sample(key: str, sample: Sample) -> bytes:
    """A valid sample's cache value (invalid samples are never stored)."""
    from grm.rpc import convert

    if not sample.valid:
        raise ValueError("invalid samples are not cached")
    msg = convert.sample_to_pb(sample)
    given = bool(sample.principles) and sample.principles == sample.spec.principles
    principles = (GIVEN, GIVEN) if given else _place(sample.text, sample.principles)
    places = principles + _place(sample.text, sample.critique)
    if places == (NOT_IN_TEXT,) * 4:
        return _wrap(Kind.SAMPLE, key, msg)
    if places[0] != NOT_IN_TEXT:
        msg.ClearField("principles")
    if places[2] != NOT_IN_TEXT:
        msg.ClearField("critique")
    return _wrap(Kind.SAMPLE, key, msg, _SAMPLE_SECTIONS_AT, _OFFSETS.pack(*places))


def _place(text: str, part: str) -> tuple[int, int]:
    """Where `part` is in `text` ((0, 0) when empty), else NOT_IN_TEXT twice."""
    if not part:
        return 0, 0
    at = text.find(part)
    if at < 0 or at + len(part) >= GIVEN:
        return NOT_IN_TEXT, NOT_IN_TEXT
    return at, at + len(part)


def decode_sample(key: str, data: bytes, spec: SampleSpec) -> Sample:
    """The stored sample, checked against the spec asked for and restamped with it.

    Index and attempt are not part of the key (they do not change the generation), so the
    sample is returned under the caller's spec.
    """
    from grm.rpc import convert

    variant = data[4:5]
    at = variant == _SAMPLE_SECTIONS_AT
    skip = _OFFSETS.size if at else 0
    also = (_SAMPLE_SECTIONS_AT, _SAMPLE_FROM_TEXT)
    msg = _unwrap(Kind.SAMPLE, key, data, common_pb2.Sample, also=also, skip=skip)
    assert isinstance(msg, common_pb2.Sample)
    if not msg.valid:
        raise CorruptValueError("stored sample is invalid")
    if msg.spec.seed != spec.seed or tuple(msg.spec.order) != tuple(spec.order):
        raise CorruptValueError("stored sample has another seed or order")
    if msg.spec.principles != spec.principles:
        raise CorruptValueError("stored sample has other principles")
    _check_scores(msg.scores, len(spec.order))
    sample = replace(convert.sample_from_pb(msg, len(spec.order)), spec=spec)
    if at:
        places = _OFFSETS.unpack_from(data, _HEADER_LEN)
        given = spec.principles if places[0] == GIVEN else sample.principles
        principles = _part(sample.text, places[0], places[1], given)
        critique = _part(sample.text, places[2], places[3], sample.critique)
        sample = replace(sample, principles=principles, critique=critique)
    elif variant == _SAMPLE_FROM_TEXT:
        principles, critique = _sections(sample.text, spec)
        sample = replace(sample, principles=principles, critique=critique)
    return sample


def _part(text: str, start: int, end: int, stored: str) -> str:
    """A part at its place in `text`, or `stored` (NOT_IN_TEXT, GIVEN)."""
    if start in (NOT_IN_TEXT, GIVEN):
        return stored
    if not start <= end <= len(text):
        raise CorruptValueError(f"a part's place {start}..{end} is outside the text")
    return text[start:end]


def _sections(text: str, spec: SampleSpec) -> tuple[str, str]:
    """A sample's principles and critique as a sampler makes them from its output: the given
    principles, else the output's own (scoring.critique.to_sample)."""
    principles, critique = split_sections(text)
    return spec.principles or principles, critique


# --- principle sets ------------------------------------------------------------------------


def encode_principles(key: str, principle_set: PrincipleSet) -> bytes:
    """One principle set's cache value."""
    from grm.rpc import convert

    if not principle_set.text.strip():
        raise ValueError("empty principle sets are not cached")
    [msg] = convert.principle_sets_to_pb([principle_set])
    return _wrap(Kind.PRINCIPLES, key, msg)


def decode_principles(key: str, data: bytes) -> PrincipleSet:
    """The stored principle set (non-empty text)."""
    from grm.rpc import convert

    msg = _unwrap(Kind.PRINCIPLES, key, data, principle_pb2.PrincipleSet)
    assert isinstance(msg, principle_pb2.PrincipleSet)
    if not msg.text.strip():
        raise CorruptValueError("stored principle set is empty")
    [principle_set] = convert.principle_sets_from_pb([msg])
    return principle_set


# --- results -------------------------------------------------------------------------------

_STATUSES = frozenset(
    v for v in reward_pb2.ScoreStatus.values() if v != reward_pb2.SCORE_STATUS_UNSPECIFIED
)
_AGGREGATIONS = frozenset(
    v for v in common_pb2.Aggregation.values() if v != common_pb2.AGGREGATION_UNSPECIFIED
)


def encode_result(key: str, result: ScoreResult) -> bytes:
    """A final result's cache value, every sample included (for include_samples requests)."""
    from grm.rpc import convert

    return _wrap(Kind.RESULT, key, convert.result_to_response(result, include_samples=True))


def decode_result(key: str, data: bytes, n: int) -> ScoreResult:
    """The stored result for n responses; checks its shape before anyone votes on it."""
    from grm.rpc import convert

    msg = _unwrap(Kind.RESULT, key, data, reward_pb2.ScoreResponse)
    assert isinstance(msg, reward_pb2.ScoreResponse)
    if msg.status not in _STATUSES or msg.aggregation not in _AGGREGATIONS:
        raise CorruptValueError(f"unknown status {msg.status} or aggregation {msg.aggregation}")
    if len(msg.rewards) != n or len(msg.votes) != n:
        raise CorruptValueError(f"stored result is for {len(msg.rewards)} responses, not {n}")
    if not msg.best or any(b >= n for b in msg.best):
        raise CorruptValueError("stored result has no valid best index")
    for s in msg.samples:
        if s.valid:
            _check_scores(s.scores, n)
    return convert.response_to_result(msg)
