"""GrmError ⇄ gRPC status: the one mapping, used by the server interceptor and every client."""

from __future__ import annotations

import grpc

from grm.core.errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    GrmError,
    InvalidArgumentError,
    ResourceExhaustedError,
    UnavailableError,
)
from grm.v1 import reward_pb2

FIELD_METADATA_KEY = "grm-error-field"  # trailing metadata naming the request field at fault

_ERROR_CLASSES: dict[str, type[GrmError]] = {
    "INVALID_ARGUMENT": InvalidArgumentError,
    "UNAVAILABLE": UnavailableError,
    "RESOURCE_EXHAUSTED": ResourceExhaustedError,
    "DEADLINE_EXCEEDED": DeadlineExceededError,
    "FAILED_PRECONDITION": FailedPreconditionError,
}


def status_code(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status for an exception: a GrmError's `code`, anything else INTERNAL."""
    name = exc.code if isinstance(exc, GrmError) else "INTERNAL"
    return getattr(grpc.StatusCode, name, grpc.StatusCode.INTERNAL)


def error_from_status(
    code: grpc.StatusCode | int, message: str, field: str | None = None
) -> GrmError:
    """The GrmError a caller sees for a status (the inverse of `status_code`)."""
    if isinstance(code, int):
        code = next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    if field and message.startswith(f"{field}: "):
        message = message[len(field) + 2 :]  # GrmError puts the field back in front
    cls = _ERROR_CLASSES.get(code.name)
    if cls is not None:
        return cls(message, field=field or None)
    exc = GrmError(message, field=field or None)
    exc.code = code.name  # e.g. INTERNAL, CANCELLED, UNKNOWN
    return exc


def item_error(exc: BaseException) -> reward_pb2.ItemError:
    """A per-item error of ScoreBatch."""
    field = exc.field if isinstance(exc, GrmError) else None
    message = str(exc) if isinstance(exc, GrmError) else f"internal error ({type(exc).__name__})"
    return reward_pb2.ItemError(code=status_code(exc).value[0], message=message, field=field or "")


def with_field_prefix(exc: GrmError, prefix: str) -> GrmError:
    """The same error, its field named inside a container (e.g. `items[2].k`)."""
    if not exc.field:
        return exc
    args = str(exc)[len(exc.field) + 2 :]
    return error_from_status(status_code(exc), args, f"{prefix}.{exc.field}")
