"""What answers behind the dev server: the embedded model, or a scripted judge without a model.

Both take prompts already rendered (TGI's `/generate` contract) and report TGI's finish
reasons. Grammars: the dev server implements only the two regexes the TGI backend sends —
`core.grammar.scores_regex(n)` and `scores_suffix_regex(n)` — recognised by exact equality
with what those functions produce and translated to the equivalent GBNF
(`scores_gbnf(n)` / `scores_suffix_gbnf(n)`). It is not a general regex→GBNF converter: any other
grammar is refused with TGI's 422 validation error.
"""

from __future__ import annotations

import functools
import hashlib
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from grm.core.grammar import scores_gbnf, scores_regex, scores_suffix_gbnf, scores_suffix_regex

_SCORE_REGEX = "(10|[1-9])"
_BLOCK = re.compile(r"\[The Begin of Response (\d+)\]\n(.*?)\n\[The End of Response \1\]", re.S)
_PIECES = re.compile(r"\w+|[^\w\s]|\s+")
SCRIPTED_VOCAB = 49152


@functools.lru_cache(maxsize=512)
def _scripted_tokens(text: str) -> tuple[tuple[int, str], ...]:
    """Tokens of a text, memoized: a k-sample request sends the same few prompts k times,
    and re-tokenizing each (a CRC per piece) made this single-process stand-in for TGI the
    bottleneck of fan-out benchmarks (real TGI tokenizes in Rust, off the suite's cores)."""
    return tuple((zlib.crc32(p.encode()) % SCRIPTED_VOCAB, p) for p in _PIECES.findall(text))


class UnsupportedGrammar(ValueError):
    """A grammar the dev server cannot enforce (TGI would accept it; we say so with a 422)."""


@dataclass(frozen=True)
class ScoreGrammar:
    """A recognised score-line grammar: `full` (free text + line) or `suffix` (numbers + brace)."""

    kind: str
    n: int
    max_body_chars: int | None = None  # a bound on the free text before the line (None: none)

    @property
    def gbnf(self) -> str:
        if self.kind != "full":
            return scores_suffix_gbnf(self.n)
        return scores_gbnf(self.n, self.max_body_chars)


_REGEX_BOUND = re.compile(r"\[\\s\\S\]\{0,(\d+)\}")


def parse_grammar(grammar: Any) -> ScoreGrammar | None:
    """TGI's `grammar` parameter → the score grammar it encodes, or UnsupportedGrammar."""
    if grammar is None:
        return None
    if not isinstance(grammar, dict) or grammar.get("type") != "regex":
        kind = grammar.get("type") if isinstance(grammar, dict) else type(grammar).__name__
        raise UnsupportedGrammar(f"grammar type {kind!r} is not supported by the dev server")
    value = grammar.get("value")
    if not isinstance(value, str) or not value:
        raise UnsupportedGrammar("`value` cannot be empty for `regex` grammar")
    n = value.count(_SCORE_REGEX)
    if n >= 1:
        if value == scores_suffix_regex(n):
            return ScoreGrammar("suffix", n)
        if value == scores_regex(n):
            return ScoreGrammar("full", n)
        bound = _REGEX_BOUND.match(value)  # free text of bounded length (engines that cannot
        if bound and value == scores_regex(n, int(bound.group(1))):  # continue a cut sample)
            return ScoreGrammar("full", n, int(bound.group(1)))
    raise UnsupportedGrammar(
        "the dev server enforces only the GRM score-line regexes of grm.core.grammar "
        "(scores_regex / scores_suffix_regex), not arbitrary regexes"
    )


@dataclass(frozen=True)
class GenerateCall:
    """One validated /generate request, as an engine sees it."""

    inputs: str
    max_new_tokens: int
    do_sample: bool
    temperature: float
    top_p: float
    seed: int
    stop: tuple[str, ...] = ()
    grammar: ScoreGrammar | None = None


@dataclass(frozen=True)
class Generated:
    text: str
    generated_tokens: int
    finish_reason: str  # TGI's: "length" | "eos_token" | "stop_sequence"


class Engine(Protocol):
    """The model side of the dev server."""

    model_id: str
    model_sha: str
    max_total_tokens: int
    capacity: int  # generations at once; admitted requests beyond it queue

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def render_chat(self, messages: Sequence[dict[str, str]]) -> str: ...

    async def tokenize(self, text: str) -> list[tuple[int, str]]: ...

    async def generate(self, call: GenerateCall) -> Generated: ...


def shown_responses(prompt: str) -> list[str]:
    """The responses a GRM prompt shows, in its order (read from the Begin/End markers)."""
    return [m.group(2) for m in _BLOCK.finditer(prompt)]


def scripted_score(response: str) -> int:
    """The scripted judge's score of one response: 9 if it says "good", 2 if "bad", else a
    stable hash in 1..10 — the same in every order, so tests can check the mapping back."""
    lowered = response.lower()
    if "good" in lowered:
        return 9
    if "bad" in lowered:
        return 2
    return 1 + hashlib.blake2b(response.encode(), digest_size=2).digest()[0] % 10


def scripted_judgement(scores: Sequence[int], seed: int, analysis_words: int = 0) -> str:
    """A well-formed GRM output (principles, analysis, score line); `analysis_words` pads the
    analysis to a real critique's length (a served GRM writes ~300 tokens)."""
    boxed = ", ".join(str(s) for s in scores)
    padding = "".join(f" point{i % 97}" for i in range(analysis_words))
    return (
        "Specific Criteria: Correctness (60%), Helpfulness (40%).\n"
        f"Analysis: a scripted judgement of {len(scores)} response(s), sample seed {seed}."
        f"{padding}\n"
        f"Scores: \\boxed{{{boxed}}}"
    )


class ScriptedEngine:
    """A model-free judge: reads n from the prompt's Begin/End markers and answers validly.

    It renders ChatML (SmolLM2's chat format) and tokenizes on word/punctuation/space
    boundaries, so token counts are plausible and deterministic.
    """

    capacity = 1_000_000

    def __init__(
        self,
        *,
        model_id: str = "grm-devtgi/scripted",
        max_total_tokens: int = 8192,
        analysis_words: int = 0,
    ) -> None:
        self.model_id = model_id
        self.model_sha = "scripted-v1"
        self.max_total_tokens = max_total_tokens
        self.analysis_words = analysis_words  # pads each judgement (see scripted_judgement)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def render_chat(self, messages: Sequence[dict[str, str]]) -> str:
        turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return turns + "<|im_start|>assistant\n"

    async def tokenize(self, text: str) -> list[tuple[int, str]]:
        return list(_scripted_tokens(text))

    async def generate(self, call: GenerateCall) -> Generated:
        scores = [scripted_score(r) for r in shown_responses(call.inputs)]
        if call.grammar is not None and call.grammar.kind == "suffix":
            scores = scores or [5] * call.grammar.n
            text = ", ".join(str(s) for s in scores[: call.grammar.n]) + "}"
        elif scores:
            text = scripted_judgement(scores, call.seed, self.analysis_words)
        else:
            text = (
                "Specific Criteria: Correctness (60%): the answer is right.\n"
                "Helpfulness (40%): the answer serves the user."
            )
        return await self.finish(text, call)

    async def finish(self, text: str, call: GenerateCall) -> Generated:
        """Apply stop sequences and the max_new_tokens budget, as TGI would."""
        for stop in call.stop:
            at = text.find(stop)
            if at != -1:
                text = text[: at + len(stop)]
                return Generated(text, len(await self.tokenize(text)), "stop_sequence")
        pieces = await self.tokenize(text)
        if len(pieces) > call.max_new_tokens:
            text = "".join(p for _, p in pieces[: call.max_new_tokens])
            return Generated(text, call.max_new_tokens, "length")
        return Generated(text, len(pieces), "eos_token")


class EmbeddedEngine:
    """The embedded llama.cpp model (one generation at a time) behind the TGI routes."""

    capacity = 1

    def __init__(self, backend: Any, *, model_id: str | None = None) -> None:
        from grm.backends.embedded import EmbeddedBackend

        self.backend: EmbeddedBackend = backend
        self.model_id = model_id or backend.info.model_id
        self.model_sha = backend.info.revision
        self.max_total_tokens = backend.settings.n_ctx

    async def start(self) -> None:
        await self.backend.start()

    async def close(self) -> None:
        await self.backend.close()

    def render_chat(self, messages: Sequence[dict[str, str]]) -> str:
        return self.backend.render(messages)

    async def tokenize(self, text: str) -> list[tuple[int, str]]:
        return await self.backend.tokenize(text)

    async def generate(self, call: GenerateCall) -> Generated:
        result = await self.backend.complete(
            call.inputs,
            max_new_tokens=call.max_new_tokens,
            temperature=call.temperature if call.do_sample else 0.0,
            top_p=call.top_p,
            seed=call.seed,
            grammar=call.grammar.gbnf if call.grammar else None,
            stop=call.stop,
        )
        finish = "length" if result.finish_reason == "length" else "eos_token"
        return Generated(result.text, result.tokens_generated, finish)
