"""The one error hierarchy of the suite.

Logic raises these; a single gRPC interceptor (and the CLI) maps them to status codes, so
no module below the transport edge needs to know about gRPC.
"""

from __future__ import annotations


class GrmError(Exception):
    """Base class; `code` names the gRPC status the transport should use."""

    code = "INTERNAL"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class InvalidArgumentError(GrmError):
    """The request itself is wrong; retrying it unchanged cannot succeed."""

    code = "INVALID_ARGUMENT"


class UnavailableError(GrmError):
    """A backend or peer is down, or no valid sample could be produced; retry may succeed."""

    code = "UNAVAILABLE"


class ResourceExhaustedError(GrmError):
    """Admission limits are full; retry later."""

    code = "RESOURCE_EXHAUSTED"


class DeadlineExceededError(GrmError):
    """The deadline passed before any usable result existed."""

    code = "DEADLINE_EXCEEDED"


class BackendError(UnavailableError):
    """A generation backend failed (load error, server error, overload)."""


class ChatTemplateError(InvalidArgumentError):
    """The engine's chat template refused the messages (e.g. Gemma-2 templates reject a system
    role). A backend that sees it may retry once with the messages as one user turn
    (grm.core.templates.single_user_turn) and remember that for the endpoint."""


class FailedPreconditionError(GrmError):
    """The service is not ready for this request (e.g. the model is still loading)."""

    code = "FAILED_PRECONDITION"
