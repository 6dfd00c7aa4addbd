"""What a child process uses, read from Linux /proc: CPU time, memory, descriptors.

The benchmarks charge CPU time per service and the reliability tests look for leaked
descriptors and memory growth in processes other than their own.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FdCount:
    """Open descriptors of a process, and how many of them are sockets."""

    total: int
    sockets: int


def open_fds(pid: int) -> FdCount:
    """Count /proc/<pid>/fd entries and those that point at a socket."""
    base = Path(f"/proc/{pid}/fd")
    total = sockets = 0
    for entry in os.listdir(base):
        try:
            target = os.readlink(base / entry)
        except FileNotFoundError:  # closed between the listing and the readlink
            continue
        total += 1
        sockets += target.startswith("socket:")
    return FdCount(total, sockets)


def rss_kib(pid: int) -> int:
    """Resident set size (VmRSS) of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _children(pid: int) -> list[int]:
    """Direct children of `pid` (Linux /proc; empty elsewhere or when it is gone)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            out += [int(x) for x in task.read_text().split()]
    return out


def _service_name(pid: int) -> str | None:
    """'dev-tgi', 'aggregator', 'principles', 'sampler-0', ... from a child's command line."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    args = [a.decode(errors="replace") for a in argv if a]
    if "grm_dev.devtgi" in args:
        return "dev-tgi"
    if "serve" not in args:
        return None
    if "--port-file" in args:  # `grm up` names every port file after the service
        return Path(args[args.index("--port-file") + 1]).stem
    return args[args.index("serve") + 1] if args.index("serve") + 1 < len(args) else None


def service_pids(root: int | None = None) -> dict[str, int]:
    """The suite's service processes below this one (dev server, aggregator, samplers, ...).

    `grm up` runs each service as its own child; they are found through /proc so that CPU
    time can be charged per service (the benchmark process itself is not included).
    """
    found: dict[str, int] = {}
    stack = _children(os.getpid() if root is None else root)
    while stack:
        pid = stack.pop()
        name = _service_name(pid)
        if name is not None:
            found[name] = pid
        stack += _children(pid)
    return dict(sorted(found.items()))


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds; 0.0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    # After the ")" closing the command name: state is field 3, utime 14 and stime 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far per service name."""
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds spent per service between two snapshots."""
    return {name: after[name] - before.get(name, 0.0) for name in after}
