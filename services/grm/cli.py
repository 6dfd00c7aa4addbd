"""The `grm` command line."""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
from typing import Any

from grm.core.errors import GrmError
from grm.core.types import Aggregation, PrincipleMode
from grm.core.validation import Defaults, Limits, build_item


def _add_scoring_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--k", type=int, default=None, help="samples per item (default 4)")
    p.add_argument("--k-meta", type=int, default=None, help="samples kept by meta-vote (default k/2)")
    p.add_argument(
        "--aggregation", choices=[a.value for a in Aggregation], default=None, help="default: vote"
    )
    p.add_argument("--principle-mode", choices=[m.value for m in PrincipleMode], default=None)
    p.add_argument("--temperature", type=float, default=None, help="default 0.5")
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--max-new-tokens", type=int, default=None, help="default 256")
    p.add_argument("--no-grammar", action="store_true", help="do not force the final score line")
    p.add_argument("--seed", type=int, default=None, help="request seed (default 0)")


def _item_builder(args: argparse.Namespace) -> Any:
    return functools.partial(
        build_item,
        k=args.k,
        k_meta=args.k_meta,
        aggregation=Aggregation(args.aggregation) if args.aggregation else None,
        principle_mode=PrincipleMode(args.principle_mode) if args.principle_mode else None,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        grammar=False if args.no_grammar else None,
        seed=args.seed,
        limits=Limits(),
        defaults=Defaults(),
    )


async def _score_local(args: argparse.Namespace) -> int:
    from grm.local import build_local_stack
    from grm.scorefile import run_scorefile

    stack = build_local_stack(model_path=args.model_path, n_ctx=args.n_ctx, meta_rm=args.meta_rm)
    build = _item_builder(args)
    try:
        await stack.start()
        out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
        with open(args.file, "rb") as stream:
            ok, failed = await run_scorefile(
                stream,
                out,
                lambda fields: build(**fields),
                stack.pipeline.score,
                details=args.details,
                concurrency=args.concurrency,
                progress=not args.quiet,
            )
        if out is not sys.stdout:
            out.close()
    finally:
        await stack.close()
    print(f"scored {ok} item(s), {failed} failed", file=sys.stderr)
    return 0 if failed == 0 else 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grm", description="GRM Suite: generative reward scoring")
    sub = parser.add_subparsers(dest="command", required=True)

    score = sub.add_parser("score", help="score a JSONL file of {id, query, responses}")
    score.add_argument("file", help='input JSONL: {"id", "query", "responses": [...]} per line')
    score.add_argument("-o", "--output", help="write results here instead of stdout")
    score.add_argument("--details", action="store_true", help="include every sample")
    score.add_argument("--concurrency", type=int, default=1, help="items in progress at once")
    score.add_argument("--quiet", action="store_true", help="no progress bar")
    score.add_argument("--model-path", default=None, help="GGUF file (default: SmolLM2-135M)")
    score.add_argument("--n-ctx", type=int, default=4096, help="model context length")
    score.add_argument("--meta-rm", default="agreement", help="meta RM for meta-vote: agreement|none")
    _add_scoring_args(score)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "score":
            return asyncio.run(_score_local(args))
    except GrmError as exc:
        print(f"grm: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"grm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
