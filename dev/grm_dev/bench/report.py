"""Shared output of every benchmark: a printed table plus a JSON file with the exact command."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Set by `grm bench` before a scenario runs: its canonical command line and settings, so the
# JSON says exactly how to repeat the run however it was started (CLI, `all`, tests).
_invocation: dict[str, Any] = {}


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def write_json(out_dir: str | Path, scenario: str, payload: dict[str, Any]) -> Path:
    """Write results with the command line, host facts and time, so a number can be traced."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{scenario}.json"
    doc = {
        "scenario": scenario,
        "command": _invocation.get("command") or " ".join(["grm", *sys.argv[1:]]),
        "settings": _invocation.get("settings", {}),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        **payload,
    }
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return path


def command_line(
    scenario: str, args: argparse.Namespace, add_args: Callable[[argparse.ArgumentParser], None]
) -> str:
    """`grm bench SCENARIO` with every option spelled out (defaults included)."""
    parser = argparse.ArgumentParser(add_help=False)
    add_args(parser)
    words = ["grm", "bench", scenario]
    for action in parser._actions:
        if not action.option_strings or not hasattr(args, action.dest):
            continue
        value = getattr(args, action.dest)
        flag = max(action.option_strings, key=len)
        if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
            if value != action.default:
                words.append(flag)
        elif value is not None and value != "":
            words += [flag, str(value)]
    return " ".join(words)


def set_invocation(
    scenario: str, args: argparse.Namespace, add_args: Callable[[argparse.ArgumentParser], None]
) -> None:
    """Record what write_json stores as `command` and `settings` for this scenario run."""
    settings = {k: v for k, v in vars(args).items() if k != "scenario" and _plain(v)}
    _invocation.clear()
    _invocation.update(command=command_line(scenario, args, add_args), settings=settings)


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


@dataclass
class Panel:
    """One chart: series over x (lines, or grouped bars) and horizontal target lines."""

    title: str
    x: Sequence[Any]
    series: Mapping[str, Sequence[float]]
    xlabel: str = ""
    ylabel: str = ""
    kind: str = "line"  # line | bar
    targets: Mapping[str, float] = field(default_factory=dict)
    log2_x: bool = False


def plot(
    out_dir: str | Path, name: str, panels: Sequence[Panel], *, title: str = ""
) -> Path | None:
    """Write `<out_dir>/<name>.png`; None (with a note) when matplotlib is not installed.

    matplotlib is imported here, with the Agg backend, so a scenario never needs a display
    and `grm bench` works without the plotting extra.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'grm-suite[dev]')")
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        _draw(ax, panel)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _draw(ax: Any, panel: Panel) -> None:
    labels = [str(x) for x in panel.x]
    if panel.kind == "bar":
        width = 0.8 / max(1, len(panel.series))
        for i, (name, values) in enumerate(panel.series.items()):
            xs = [j + (i - (len(panel.series) - 1) / 2) * width for j in range(len(labels))]
            ax.bar(xs, list(values), width, label=name)
        ax.set_xticks(range(len(labels)), labels)
    else:
        for name, values in panel.series.items():
            ax.plot(list(panel.x), list(values), marker="o", label=name)
        if panel.log2_x:
            ax.set_xscale("log", base=2)
        ax.set_xticks(list(panel.x), labels)
    ax.set_title(panel.title, fontsize=10)
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)
    ax.grid(True, alpha=0.3)
    for name, value in panel.targets.items():
        ax.axhline(value, color="red", linestyle=":", linewidth=1.2, label=name)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
