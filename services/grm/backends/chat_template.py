"""Chat templates rendered here rather than by the engine (Jinja, as in tokenizer_config.json).

Prompt rendering is apart from transport: a backend either lets its engine apply the served
model's template (TGI's `/chat_tokenize`, an OpenAI-compatible engine's chat route) or renders
a template given in the settings with this module and sends plain text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from grm.core.errors import FailedPreconditionError, InvalidArgumentError


def compile_chat_template(source: str) -> Any:
    """A chat template (Jinja, as in tokenizer_config.json) rendered in a sandbox."""
    try:
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError as exc:  # pragma: no cover - jinja2 comes with llama-cpp-python
        raise FailedPreconditionError("a local chat_template needs the jinja2 package") from exc
    path = Path(source)
    text = path.read_text("utf-8") if "{" not in source and path.is_file() else source

    def raise_exception(message: str) -> None:
        raise InvalidArgumentError(f"chat template: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(text)
