"""Conversion between grm.v1 messages and the core dataclasses, one module per service.

Servicers, the remote sampler pool and the client all go through here, so a field added to
the API is mapped once, and the JSON written by `grm score --target` is built from the same
core ScoreResult as local scoring. `errors` is the one GrmError ⇄ status mapping.
"""

from __future__ import annotations

from grm.rpc.convert.critique import (
    critique_call,
    critique_request,
    load_to_pb,
)
from grm.rpc.convert.errors import (
    FIELD_METADATA_KEY,
    error_from_status,
    item_error,
    status_code,
    with_field_prefix,
)
from grm.rpc.convert.messages import (
    AGG_FROM_PB,
    AGG_TO_PB,
    MODE_FROM_PB,
    MODE_TO_PB,
    STATUS_FROM_PB,
    STATUS_TO_PB,
    aggregation_from_pb,
    context_to_pb,
    model_from_pb,
    model_to_pb,
    principle_mode_from_pb,
    sample_from_pb,
    sample_to_pb,
    sampling_fields,
    sampling_from_pb,
    sampling_to_pb,
    spec_from_pb,
    spec_to_pb,
    turns_from_pb,
)
from grm.rpc.convert.principles import (
    principle_call,
    principle_request,
    principle_sets_from_pb,
    principle_sets_to_pb,
)
from grm.rpc.convert.reward import (
    cache_usage_to_pb,
    item_to_request,
    response_to_result,
    result_to_response,
    score_request,
    score_request_fields,
)

__all__ = [
    "AGG_FROM_PB",
    "AGG_TO_PB",
    "FIELD_METADATA_KEY",
    "MODE_FROM_PB",
    "MODE_TO_PB",
    "STATUS_FROM_PB",
    "STATUS_TO_PB",
    "aggregation_from_pb",
    "cache_usage_to_pb",
    "context_to_pb",
    "critique_call",
    "critique_request",
    "error_from_status",
    "item_error",
    "item_to_request",
    "load_to_pb",
    "model_from_pb",
    "model_to_pb",
    "principle_call",
    "principle_mode_from_pb",
    "principle_request",
    "principle_sets_from_pb",
    "principle_sets_to_pb",
    "response_to_result",
    "result_to_response",
    "sample_from_pb",
    "sample_to_pb",
    "sampling_fields",
    "sampling_from_pb",
    "sampling_to_pb",
    "score_request",
    "score_request_fields",
    "spec_from_pb",
    "spec_to_pb",
    "status_code",
    "turns_from_pb",
    "with_field_prefix",
]
