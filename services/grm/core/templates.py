"""Versioned prompt templates (data in `templates/*.toml`) rendered into chat messages.

Responses are untrusted text written by the policy under training: they are wrapped in the
paper's Begin/End markers, and any copy of those markers inside them is defused (`[The End of
Response 1]` becomes `(The End of Response 1]`), so a response cannot close its own block and
pose as the judge's instructions. That is the only change made to response (and query) text by
default: the judge scores what the policy wrote.

**Roles.** The paper's prompt is one block. `roles = "user"` (grm-default-v3, the default)
sends it as ONE user turn — the form every chat template accepts (Gemma-2 templates, hence
DeepSeek-GRM-27B's, raise on a system message). `roles = "system"` (grm-default-v3-system, and
the older v1/v2) sends the scorer instructions as a system message and the rest as the user
turn. The version string is part of every cache key, so the two never share samples.

**Content-level defusing** (`defuse = "scores"`: grm-default-v3-defused, and v2) also rewrites
score-list syntax inside responses and queries (`\\boxed{` → `boxed{`, `[[` → `[ [`). It stops
a weak judge that copies a forged `Scores: \\boxed{10, 10}` from a response from scoring with
it (the strict parser already ignores such a copy unless it is the output's final line), at
the price of showing the judge altered text: a math response's `\\boxed{42}` answer or a shell
`[[ -f x ]]` test is no longer what the policy wrote. Opt in only for weak judges.

**Reference answers.** With a reference, the joint, critique and principle prompts show it in
a `#### Reference Answer ####` block after the conversation (reference-guided scoring).

A template file may say `extends = "<version>"`: it takes that version's parts and overrides
the keys it sets (the variants differ in one or two keys).
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from grm.core.types import Context

DEFAULT_TEMPLATE = "grm-default-v3"
ROLES = ("user", "system")
DEFUSE_LEVELS = ("markers", "markers+headers", "scores")

Message = dict[str, str]

_MARKER = re.compile(r"\[(?=\s*the\s+(?:begin|end)\s+of\s+response)", re.IGNORECASE)
_HEADER = re.compile(r"^(\s*)####", re.MULTILINE)
_BOXED = re.compile(r"\\boxed(?=\s*\{)")
_FLAGS = ("version", "extends", "roles", "defuse", "defuse_score_lists")
DEFAULT_META_QUESTION = "Is this judgement correct? Answer with a single word: Yes or No."


def defuse_markers(text: str) -> str:
    """Neutralise copies of the response delimiters inside untrusted text."""
    return _MARKER.sub("(", text)


def defuse(text: str) -> str:
    """The v1/v2 defusing: response delimiters and `####` section headers."""
    return _HEADER.sub(r"\1# # # #", defuse_markers(text))


def defuse_score_lists(text: str) -> str:
    """Untrusted text loses the score-list syntax the parser reads (`\\boxed{...}` becomes
    `boxed{...}`, `[[` becomes `[ [`): a small judge that copies a forged `Scores: \\boxed{10,
    10}` from a response into its output then writes an unparseable copy, not a score."""
    return _BOXED.sub("boxed", text).replace("[[", "[ [")


def single_user_turn(messages: Sequence[Message]) -> tuple[Message, ...]:
    """The same prompt without a system role: system text goes in front of the first user turn.

    Chat templates of some model families (Gemma-2, hence DeepSeek-GRM-27B) raise on a system
    message; the paper's prompt is one block, so folding it into the user turn loses nothing.
    """
    system = [m["content"] for m in messages if m["role"] == "system"]
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if not system:
        return tuple(rest)
    head = "\n\n".join(system)
    for m in rest:
        if m["role"] == "user":
            m["content"] = f"{head}\n\n{m['content']}"
            return tuple(rest)
    return ({"role": "user", "content": head}, *rest)


@dataclass(frozen=True)
class TemplateSet:
    """One version of every prompt the suite renders."""

    version: str
    parts: dict[str, str]
    # Also defuse score lists in responses and queries (v2, v3-defused): see
    # defuse_score_lists. The judgement a meta RM reads keeps its scores.
    defuse_scores: bool = False
    roles: str = "user"  # "user": one user turn; "system": system message + user turn
    defuse_headers: bool = False  # v1/v2 also rewrote `####` lines inside untrusted text

    def _untrusted(self, text: str) -> str:
        text = defuse(text) if self.defuse_headers else defuse_markers(text)
        return defuse_score_lists(text) if self.defuse_scores else text

    def _context(self, context: Context) -> str:
        if len(context.turns) == 1 and context.turns[0].role == "user":
            body = self._untrusted(context.turns[0].content)
        else:
            body = "\n\n".join(
                f"{t.role.capitalize()}: {self._untrusted(t.content)}" for t in context.turns
            )
        return f"{self.parts['context_header']}\n{body}"

    def _reference(self, reference: str) -> list[str]:
        """The reference-answer block (none without a reference)."""
        if not reference.strip():
            return []
        header = self.parts.get("reference_header", "#### Reference Answer ####")
        note = self.parts.get("reference_note", "")
        body = self._untrusted(reference.strip())
        return [f"{header}\n{body}" + (f"\n{note}" if note else "")]

    def _responses(self, responses: Sequence[str]) -> str:
        blocks = [self.parts["responses_header"]]
        for i, response in enumerate(responses, start=1):
            blocks.append(
                f"{self.parts['response_begin'].format(i=i)}\n{self._untrusted(response)}\n"
                f"{self.parts['response_end'].format(i=i)}"
            )
        return "\n".join(blocks)

    def _messages(self, system: str, user: str) -> list[Message]:
        """The prompt in this version's roles: one user turn, or system + user."""
        if self.roles == "system":
            return [{"role": "system", "content": system}, {"role": "user", "content": user}]
        return [{"role": "user", "content": f"{system}\n\n{user}"}]

    @staticmethod
    def _example(n: int) -> str:
        return "\\boxed{" + ", ".join(["x"] * n) + "}"

    def joint(self, context: Context, shown: Sequence[str], reference: str = "") -> list[Message]:
        """The paper's default prompt: principles, analysis and scores in one generation."""
        fmt = self.parts["joint_format"].format(example=self._example(len(shown)), n=len(shown))
        user = "\n\n".join(
            [
                self.parts["criteria"],
                self._context(context),
                *self._reference(reference),
                self._responses(shown),
                fmt,
            ]
        )
        return self._messages(self.parts["system"], user)

    def critique(
        self, context: Context, shown: Sequence[str], principles: str, reference: str = ""
    ) -> list[Message]:
        """Critique and scores conditioned on given principles (separate mode)."""
        fmt = self.parts["critique_format"].format(example=self._example(len(shown)), n=len(shown))
        user = "\n\n".join(
            [
                self.parts["criteria"],
                f"{self.parts['principles_header']}\n{principles.strip()}",
                self._context(context),
                *self._reference(reference),
                self._responses(shown),
                fmt,
            ]
        )
        return self._messages(self.parts["system"], user)

    def sample_prompt(
        self, context: Context, shown: Sequence[str], principles: str = "", reference: str = ""
    ) -> list[Message]:
        """The prompt one sample saw: critique with its principles, else the joint prompt."""
        if principles:
            return self.critique(context, shown, principles, reference)
        return self.joint(context, shown, reference)

    def principles(
        self, context: Context, responses: Sequence[str] = (), reference: str = ""
    ) -> list[Message]:
        """Principles only, for the principle generator: conditioned on the query and, as in
        the paper, on the responses (none given: query-only principles)."""
        pieces = [self.parts["criteria"], self._context(context), *self._reference(reference)]
        if responses:
            pieces.append(self._responses(responses))
        pieces.append(self.parts["principles_format"])
        return self._messages(self.parts["principles_system"], "\n\n".join(pieces))

    def meta_rm(self, prompt: Sequence[Message], output: str) -> list[Message]:
        """The paper's meta RM input: the GRM prompt as the user turn, the GRM's raw output
        as the assistant reply (the meta RM's own chat template renders the pair)."""
        user = single_user_turn(prompt)
        return [*user, {"role": "assistant", "content": output}]

    @property
    def meta_question(self) -> str:
        """The question a generative stand-in for the meta RM answers Yes/No after the pair."""
        return self.parts.get("meta_question", DEFAULT_META_QUESTION)


def _read(version: str) -> dict[str, Any]:
    try:
        raw = resources.files("grm.core").joinpath(f"templates/{version}.toml").read_text("utf-8")
    except FileNotFoundError as exc:
        raise ValueError(f"unknown template version {version!r}") from exc
    data = tomllib.loads(raw)
    if data.get("version") != version:
        raise ValueError(f"template file {version}.toml declares version {data.get('version')!r}")
    base = data.get("extends")
    if base:
        merged = {k: v for k, v in _read(base).items() if k not in ("version", "extends")}
        merged.update(data)
        return merged
    return data


@functools.cache
def load_templates(version: str = DEFAULT_TEMPLATE) -> TemplateSet:
    """Load a template version shipped with the package (read once per process)."""
    data = _read(version)
    roles = str(data.get("roles", "system"))  # files before v3 sent a system message
    if roles not in ROLES:
        raise ValueError(f"template {version}: roles must be one of {ROLES}, not {roles!r}")
    # Files before v3 also defused `####` headers; v2 said so with defuse_score_lists.
    level = str(data.get("defuse", "markers+headers"))
    if level not in DEFUSE_LEVELS:
        raise ValueError(f"template {version}: defuse must be one of {DEFUSE_LEVELS}")
    scores = level == "scores" or bool(data.get("defuse_score_lists", False))
    parts = {k: v for k, v in data.items() if k not in _FLAGS}
    return TemplateSet(
        version=version,
        parts=parts,
        defuse_scores=scores,
        roles=roles,
        defuse_headers=level == "markers+headers",
    )
