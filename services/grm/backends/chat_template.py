"""Chat templates rendered here rather than by the engine (Jinja, as in tokenizer_config.json).

Prompt rendering is apart from transport: a backend either lets its engine apply the served
model's template (TGI's `/chat_tokenize`, an OpenAI-compatible engine's chat route) or renders
a template given in the settings with this module and sends plain text. Templates run the way
transformers and TGI run them: a sandboxed Jinja environment with `trim_blocks` and
`lstrip_blocks`, a `raise_exception` global (which raises ChatTemplateError, as a refused role
is a template error on the engines too), `bos_token` / `eos_token` and `add_generation_prompt`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grm.core.errors import ChatTemplateError, FailedPreconditionError


def compile_chat_template(source: str) -> Any:
    """A chat template (Jinja source, or a file holding it) compiled in a sandbox."""
    try:
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError as exc:  # pragma: no cover - jinja2 comes with llama-cpp-python
        raise FailedPreconditionError("a local chat_template needs the jinja2 package") from exc
    path = Path(source)
    text = path.read_text("utf-8") if "{" not in source and path.is_file() else source

    def raise_exception(message: str) -> None:
        raise ChatTemplateError(f"chat template: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(text)


def render_chat(
    template: Any,
    messages: Sequence[dict[str, str]],
    *,
    add_generation_prompt: bool = True,
    bos_token: str = "",
    eos_token: str = "",
) -> str:
    """The template applied to `messages`; a failure in the template is a ChatTemplateError."""
    from jinja2 import TemplateError

    try:
        return str(
            template.render(
                messages=[dict(m) for m in messages],
                add_generation_prompt=add_generation_prompt,
                bos_token=bos_token,
                eos_token=eos_token,
            )
        )
    except TemplateError as exc:
        raise ChatTemplateError(f"chat template: {exc}") from exc
