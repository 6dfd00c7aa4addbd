"""`grm spct-data`: SPCT training data from labeled preferences (paper §3.2, Eq. 10).

For each labeled item N trajectories (principles + critique + scores) are sampled; the ones
that agree with the label become rejective fine-tuning (RFT) examples in chat format, every
valid one becomes a meta-RM example with a 0/1 label. Items whose trajectories are all correct
— every one drawn, invalid ones included, so [invalid, correct, correct] is not too easy, as
in the paper — are "too easy" and left out of the RFT file unless kept. Items no
trajectory got right can be re-sampled with a hint naming the best response ("hinted
sampling"); hinted examples are marked and stored with the prompt WITHOUT the hint, and the
hint is never used at serving time.

Output folder: `rft.jsonl`, `meta_rm.jsonl`, `items.jsonl` (one line per input line, also the
resume log: an interrupted run continues after the last finished line) and `summary.json`.

The meta-RM file's `messages` are the meta RM's input exactly as the suite's meta RMs read it
at serving time (grm.metarm.inputs.meta_messages: the GRM prompt the trajectory was sampled
from as the user turn, its raw output as the assistant reply), so a meta RM trained on it sees
at serving time what it was trained on.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from grm.backends.base import GenerationBackend
from grm.cli.datasets import LabeledItem, labeled_item
from grm.core.decoding import EMBEDDED, SERVED, sampling_defaults
from grm.core.errors import GrmError, InvalidArgumentError
from grm.core.plan import SamplingJob
from grm.core.sampling import apply_order, sample_spec
from grm.core.spct import is_correct
from grm.core.templates import TemplateSet
from grm.core.types import Sample, SamplingParams, ScoreItem, ScoreResult
from grm.metarm.inputs import meta_messages
from grm.scoring.critique import CritiqueSampler, to_sample

FILES = ("rft.jsonl", "meta_rm.jsonl", "items.jsonl")


@dataclass
class Tally:
    items: int = 0
    bad_lines: int = 0
    failed_items: int = 0
    samples: int = 0
    invalid: int = 0
    correct: int = 0
    too_easy: int = 0
    all_wrong: int = 0
    hinted_rescued: int = 0
    rft_records: int = 0
    meta_records: int = 0
    item_accuracy: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        scored = max(1, self.items - self.failed_items)
        return {
            "items": self.items,
            "bad_lines": self.bad_lines,
            "failed_items": self.failed_items,
            "samples": self.samples,
            "invalid_rate": self.invalid / max(1, self.samples),
            "mean_item_accuracy": sum(self.item_accuracy) / max(1, len(self.item_accuracy)),
            "share_too_easy": self.too_easy / scored,
            "share_all_wrong": self.all_wrong / scored,
            "hinted_rescued": self.hinted_rescued,
            "rft_records": self.rft_records,
            "meta_rm_records": self.meta_records,
        }


class Hinter:
    """Hinted re-sampling on a local backend ("The best response is: Response i")."""

    def __init__(self, sampler: CritiqueSampler) -> None:
        self.sampler = sampler

    async def sample(self, item: ScoreItem, best: int, n: int) -> list[Sample]:
        specs = [sample_spec(item.seed + 1_000_003, j, len(item.responses)) for j in range(n)]
        requests = []
        for spec in specs:
            request = self.sampler.request_for(SamplingJob.of(item), spec)
            shown_best = spec.order.index(best) + 1
            *head, last = request.messages
            hinted = {
                **last,
                "content": f"{last['content']}\n\nThe best response is: Response {shown_best}",
            }
            requests.append(dataclasses.replace(request, messages=(*head, hinted)))
        backend: GenerationBackend = self.sampler.backend
        results = await backend.generate(requests)
        n_resp = len(item.responses)
        return [
            to_sample(s, r, n_resp)
            for s, r in zip(specs, results, strict=True)
            if not isinstance(r, GrmError)
        ]


def _messages(templates: TemplateSet, item: ScoreItem, sample: Sample) -> list[dict[str, str]]:
    """The prompt the sample was drawn from (its order, principles and reference)."""
    shown = apply_order(item.responses, sample.spec.order)
    return templates.sample_prompt(item.context, shown, sample.spec.principles, item.reference)


def _resume(out: Path) -> set[int]:
    """Lines already finished; drop any partial records written after the last of them."""
    log = out / "items.jsonl"
    if not log.exists():
        return set()
    done = {
        json.loads(line)["line"] for line in log.read_text("utf-8").splitlines() if line.strip()
    }
    for name in ("rft.jsonl", "meta_rm.jsonl"):
        path = out / name
        if path.exists():
            keep = [
                line
                for line in path.read_text("utf-8").splitlines()
                if line.strip() and json.loads(line)["line"] in done
            ]
            path.write_text("".join(f"{line}\n" for line in keep), "utf-8")
    return done


async def run_spct(
    input_path: Path,
    out: Path,
    *,
    build: Callable[[LabeledItem], ScoreItem],
    score: Callable[[ScoreItem], Awaitable[ScoreResult]],
    templates: TemplateSet,
    keep_easy: bool = False,
    hinter: Hinter | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Process every line of `input_path` not yet finished in `out`; returns the summary."""
    # A batch tool: local file I/O between awaits blocks nothing that matters.
    out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
    done = _resume(out)
    raw = input_path.read_bytes().splitlines()  # noqa: ASYNC240
    todo = [(i, line) for i, line in enumerate(raw, 1) if line.strip() and i not in done]
    bar = tqdm(total=len(todo), unit="item", disable=not progress, dynamic_ncols=True)
    with (
        (out / "rft.jsonl").open("a", encoding="utf-8") as rft,
        (out / "meta_rm.jsonl").open("a", encoding="utf-8") as meta,
        (out / "items.jsonl").open("a", encoding="utf-8") as log,
    ):
        for number, line in todo:
            record = await _one(number, line, build, score, templates, keep_easy, hinter)
            for r in record.pop("_rft"):
                rft.write(json.dumps(r, ensure_ascii=False) + "\n")
            for r in record.pop("_meta"):
                meta.write(json.dumps(r, ensure_ascii=False) + "\n")
            rft.flush()
            meta.flush()
            log.write(json.dumps(record, ensure_ascii=False) + "\n")
            log.flush()
            bar.update(1)
    bar.close()
    summary = _summarise(out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", "utf-8")
    return summary


async def _one(
    number: int,
    line: bytes,
    build: Callable[[LabeledItem], ScoreItem],
    score: Callable[[ScoreItem], Awaitable[ScoreResult]],
    templates: TemplateSet,
    keep_easy: bool,
    hinter: Hinter | None,
) -> dict[str, Any]:
    base: dict[str, Any] = {"line": number, "_rft": [], "_meta": []}
    try:
        data = json.loads(line.decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError("line must be a JSON object")
        labeled = labeled_item(data, data.get("id", number))
        item = build(labeled)
    except (UnicodeDecodeError, ValueError, GrmError) as exc:
        return {**base, "error": f"{type(exc).__name__}: {exc}"}
    base["id"] = labeled.item_id
    try:
        result = await score(item)
        samples = list(result.samples)
    except GrmError as exc:  # no valid sample: every draw was invalid
        return {**base, "error": f"{exc.code}: {exc}", "n_valid": 0}
    valid = [s for s in samples if s.valid and s.scores is not None]
    correct = [s for s in valid if is_correct(s.scores, labeled.label)]  # type: ignore[arg-type]
    # Over every trajectory drawn: an invalid one is not a correct one.
    too_easy = bool(samples) and len(correct) == len(samples)
    rft_samples = [(s, False) for s in correct] if keep_easy or not too_easy else []
    hinted: list[Sample] = []
    best = labeled.label.best_index()
    if not correct and hinter is not None and best is not None:
        hinted = [
            s
            for s in await hinter.sample(item, best, max(1, len(valid) or item.k))
            if s.valid and is_correct(s.scores, labeled.label)  # type: ignore[arg-type]
        ]
        rft_samples += [(s, True) for s in hinted]
    for s, was_hinted in rft_samples:
        base["_rft"].append(
            {
                "line": number,
                "id": labeled.item_id,
                "messages": [
                    *_messages(templates, item, s),
                    {"role": "assistant", "content": s.text},
                ],
                "order": list(s.spec.order),
                "seed": s.spec.seed,
                "scores": list(s.scores or ()),
                "hinted": was_hinted,
            }
        )
    for s in valid:
        base["_meta"].append(
            {
                "line": number,
                "id": labeled.item_id,
                "messages": meta_messages(
                    templates, item.context, item.responses, s, item.reference
                ),
                "label": int(s in correct),
                "order": list(s.spec.order),
                "seed": s.spec.seed,
            }
        )
    return {
        **base,
        "n_samples": len(samples),
        "n_valid": len(valid),
        "n_invalid": len(samples) - len(valid),
        "n_correct": len(correct),
        "accuracy": len(correct) / len(valid) if valid else 0.0,
        "too_easy": too_easy,
        "all_wrong": bool(valid) and not correct,
        "hinted_correct": len(hinted),
    }


def _summarise(out: Path) -> dict[str, Any]:
    """The summary over every finished line (this run and resumed ones)."""
    tally = Tally()
    for line in (out / "items.jsonl").read_text("utf-8").splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        tally.items += 1
        if "error" in r:
            if "n_valid" in r:
                tally.failed_items += 1
            else:
                tally.bad_lines += 1
            continue
        tally.samples += r["n_samples"]
        tally.invalid += r["n_invalid"]
        tally.correct += r["n_correct"]
        tally.too_easy += r["too_easy"]
        tally.all_wrong += r["all_wrong"]
        tally.hinted_rescued += r["hinted_correct"] > 0
        tally.item_accuracy.append(r["accuracy"])
    tally.rft_records = _count(out / "rft.jsonl")
    tally.meta_records = _count(out / "meta_rm.jsonl")
    return tally.summary()


def _count(path: Path) -> int:
    return (
        sum(1 for line in path.read_text("utf-8").splitlines() if line.strip())
        if path.exists()
        else 0
    )


def default_build(
    n: int, params: SamplingParams, seed: int = 0
) -> Callable[[LabeledItem], ScoreItem]:
    """N trajectories per item, via the regular request validation."""
    from grm.core.validation import build_item

    def build(labeled: LabeledItem) -> ScoreItem:
        return build_item(
            query=labeled.query,
            turns=labeled.turns,
            responses=labeled.responses,
            k=n,
            temperature=params.temperature,
            max_new_tokens=params.max_new_tokens,
            grammar=params.grammar,
            force_scores=params.force_scores,
            seed=seed,
        )

    return build


FILES_HELP = (
    "writes into --out: rft.jsonl (rejective fine-tuning examples: the GRM prompt and a "
    "correct trajectory as chat messages), meta_rm.jsonl (meta-RM examples: the GRM prompt "
    "as the user turn and a valid trajectory's raw output as the assistant reply, exactly as "
    "the meta RM reads them at serving time, with a 0/1 label), items.jsonl (one line per "
    "input line; also the resume log) and summary.json (rates and counts)"
)


def add_arguments(p: Any) -> None:
    """Flags of `grm spct-data`."""
    p.description = "SPCT training data from labeled preferences: " + FILES_HELP
    p.add_argument(
        "input",
        help="JSONL: {query, responses, best|labels|score}, "
        "{prompt, chosen, rejected} or HH-RLHF {chosen, rejected}",
    )
    p.add_argument(
        "--out",
        default="spct-out",
        help="output folder (resumed if it exists): rft.jsonl, meta_rm.jsonl, items.jsonl, "
        "summary.json",
    )
    p.add_argument("--n", type=int, default=3, help="trajectories per item (paper: N_RFT = 3)")
    p.add_argument("--keep-easy", action="store_true", help="keep items all N got right in RFT")
    p.add_argument("--hint", action="store_true", help="hinted re-sampling of all-wrong items")
    p.add_argument("--temperature", type=float, default=0.5)
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="default: the decoding profile's (1024 for engines, 256 for the embedded model)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model-path", default=None, help="GGUF file (default: SmolLM2-135M)")
    p.add_argument("--tgi-url", default=None, help="sample from TGI (or grm dev-tgi) instead")
    p.add_argument("--target", default=None, help="sample through a running suite at HOST:PORT")
    p.add_argument("--timeout", type=float, default=600.0, help="--target: seconds per item")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


async def run_cli(args: Any) -> dict[str, Any]:
    """`grm spct-data` in process (embedded or TGI backend) or through a running suite."""
    # The embedded model's decoding profile in process, else an engine's (grm.core.decoding).
    profile = EMBEDDED if not (args.tgi_url or args.target) else SERVED
    params = replace(sampling_defaults(profile), temperature=args.temperature)
    if args.max_new_tokens is not None:
        params = replace(params, max_new_tokens=args.max_new_tokens)
    build = default_build(args.n, params, seed=args.seed)
    common = dict(keep_easy=args.keep_easy, progress=not args.quiet)
    if args.target:
        if args.hint:
            raise InvalidArgumentError("hinted sampling needs a local model, not --target")
        from grm.client import AsyncGrmClient
        from grm.core.templates import load_templates

        async with AsyncGrmClient(args.target, timeout=args.timeout) as client:

            async def score(item: ScoreItem) -> ScoreResult:
                return await client.score_item(item, include_samples=True)

            summary = await run_spct(
                Path(args.input),
                Path(args.out),
                build=build,
                score=score,
                templates=load_templates(),
                **common,  # type: ignore[arg-type]
            )
    else:
        from grm.cli.local import build_local_stack

        stack = build_local_stack(model_path=args.model_path, meta_rm=None, tgi_url=args.tgi_url)
        try:
            await stack.start()
            summary = await run_spct(
                Path(args.input),
                Path(args.out),
                build=build,
                score=stack.pipeline.score,
                templates=stack.sampler.templates,
                hinter=Hinter(stack.sampler) if args.hint else None,
                **common,  # type: ignore[arg-type]
            )
        finally:
            await stack.close()
    print(json.dumps(summary, indent=2))
    return summary
