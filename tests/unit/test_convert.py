"""grm.rpc.convert: proto messages and core dataclasses map both ways without loss."""

from __future__ import annotations

import grpc
import pytest

from grm.core.errors import GrmError, InvalidArgumentError
from grm.core.types import (
    Aggregation,
    ModelInfo,
    PrincipleMode,
    Sample,
    SampleSpec,
    ScoreResult,
    ScoreStatus,
    Timings,
)
from grm.core.validation import Defaults, Limits, build_item
from grm.rpc import convert
from grm.v1 import common_pb2

ITEMS = [
    {"query": "What is 2 + 2?", "responses": ["4", "5"]},
    {
        "turns": [
            ("system", "Be brief."),
            ("user", "hi"),
            ("assistant", "hello"),
            ("user", "2+2?"),
        ],
        "responses": ["4"],
        "k": 6,
        "seed": 99,
        "temperature": 0.7,
        "top_p": 0.9,
        "max_new_tokens": 128,
        "grammar": False,
        "request_id": "r-7",
    },
    {"query": "q", "responses": ["a", "b", "c"], "aggregation": Aggregation.META_VOTE, "k_meta": 3},
    {"query": "q", "responses": ["a", "b"], "aggregation": Aggregation.GREEDY},
    {
        "query": "q",
        "responses": ["a", "b"],
        "principle_mode": PrincipleMode.SEPARATE,
        "latency_budget_ms": 1500,
    },
    {"query": "q", "responses": ["a", "b"], "principles": "Accuracy (100%)."},
]


@pytest.mark.parametrize("fields", ITEMS)
def test_an_item_survives_the_trip_through_a_score_request(fields: dict) -> None:
    item = build_item(**fields)
    request = convert.item_to_request(item, include_samples=True)
    wire = type(request).FromString(request.SerializeToString())
    assert build_item(**convert.score_request_fields(wire)) == item
    assert wire.include_samples


def test_score_request_from_python_values_leaves_unset_fields_to_the_server() -> None:
    request = convert.score_request("q", ["a", "b"])
    assert not request.HasField("k") and not request.HasField("seed")
    assert not request.sampling.HasField("temperature")
    assert request.aggregation == common_pb2.AGGREGATION_UNSPECIFIED
    fields = convert.score_request_fields(request)
    assert fields["k"] is None and fields["aggregation"] is None and "temperature" not in fields
    turns = convert.score_request([{"role": "user", "content": "hi"}], ["a"], k=0)
    assert turns.HasField("k") and turns.k == 0  # explicitly 0: the server must reject it
    assert [(t.role, t.content) for t in turns.turns] == [("user", "hi")]


def test_a_result_survives_the_trip_through_a_score_response() -> None:
    spec = SampleSpec(index=0, attempt=0, seed=5, order=(1, 0), principles="")
    valid = Sample(spec, "Scores: \\boxed{3, 8}", "p", "c", (8, 3), "", 12, 40.5, "stop", 5, "s:1")
    invalid = Sample(
        SampleSpec(1, 1, 6, (0, 1)), "junk", "", "junk", None, "no score list", 3, 9.0, "length"
    )
    result = ScoreResult(
        rewards=(8.0, 3.0),
        votes=(8, 3),
        k_requested=2,
        k_used=1,
        k_valid=1,
        invalid_samples=1,
        status=ScoreStatus.PARTIAL,
        best=(0,),
        aggregation=Aggregation.META_VOTE,
        samples=(valid, invalid),
        used=(True, False),
        meta_scores=(0.75, None),
        status_detail="1 of 2 samples valid",
        timings=Timings(10.0, 1.0, 8.0, 1.0),
        model=ModelInfo("m", "r", "embedded", "grm-default-v1"),
        request_id="abc",
        k_planned=2,
    )
    msg = convert.result_to_response(result, include_samples=True)
    back = convert.response_to_result(type(msg).FromString(msg.SerializeToString()))
    assert back == result
    without = convert.response_to_result(convert.result_to_response(result))
    assert without.samples == () and without.rewards == result.rewards


def test_a_sample_with_the_wrong_number_of_scores_is_invalid() -> None:
    msg = common_pb2.Sample(spec=common_pb2.SampleSpec(order=[0, 1]), scores=[5], valid=True)
    sample = convert.sample_from_pb(msg, 2, sampler="s:1")
    assert sample.scores is None and "1 scores for 2 responses" in sample.invalid_reason
    assert sample.sampler == "s:1"


@pytest.mark.parametrize(
    "code",
    ["INVALID_ARGUMENT", "UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED",
     "FAILED_PRECONDITION", "INTERNAL", "CANCELLED"],
)  # fmt: skip
def test_status_codes_and_errors_map_both_ways(code: str) -> None:
    status = grpc.StatusCode[code]
    err = convert.error_from_status(status.value[0], "went wrong")
    assert isinstance(err, GrmError) and err.code == code
    assert convert.status_code(err) is status
    item = convert.item_error(err)
    assert item.code == status.value[0] and item.message == "went wrong"


def test_fields_are_kept_and_prefixed_for_batch_items() -> None:
    err = InvalidArgumentError("must be between 1 and 64, got 0", field="k")
    prefixed = convert.with_field_prefix(err, "items[3]")
    assert isinstance(prefixed, InvalidArgumentError)
    assert prefixed.field == "items[3].k"
    assert str(prefixed) == "items[3].k: must be between 1 and 64, got 0"
    item = convert.item_error(prefixed)
    back = convert.error_from_status(item.code, item.message, item.field)
    assert str(back) == str(prefixed) and back.field == "items[3].k"
    assert convert.item_error(ValueError("x")).message == "internal error (ValueError)"


def test_critique_call_validates_against_limits() -> None:
    request = convert.critique_request(
        build_item(query="q", responses=["a", "b"]).context,
        ["a", "b"],
        [SampleSpec(0, 0, 1, (1, 0))],
        build_item(query="q", responses=["a"]).sampling,
        reference="Paris",
    )
    context, responses, specs, params, reference = convert.critique_call(
        request, Limits(), Defaults()
    )
    assert context.turns[0].content == "q" and reference == "Paris"
    assert responses == ("a", "b") and specs[0].order == (1, 0) and params.max_new_tokens == 1024
    request.responses.append("c" * 50)
    request.specs[0].order[:] = [1, 0, 2]
    with pytest.raises(InvalidArgumentError) as info:
        convert.critique_call(request, Limits(max_response_chars=10), Defaults())
    assert info.value.field == "responses[2]"
