"""The CPU time and peak memory of this process's children, by what they run.

Read from Linux's /proc: elsewhere every figure is 0. A child that has exited no longer
counts, so take the figures of children that live through what is measured (a server, a
worker's processes).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def children_cpu_seconds(markers: Sequence[str]) -> dict[str, float]:
    """User and system CPU seconds of this process's running children, summed by the first of
    `markers` that occurs in each child's command line (children with none are left out)."""
    used = dict.fromkeys(markers, 0.0)
    for marker, _, fields in _children(markers):
        used[marker] += (int(fields[11]) + int(fields[12])) / _TICKS
    return used


def children_peak_memory_mb(markers: Sequence[str]) -> dict[str, float]:
    """The peak resident memory (VmHWM) of this process's running children, in MB, summed by
    marker as `children_cpu_seconds` sums their CPU."""
    peak = dict.fromkeys(markers, 0.0)
    for marker, child, _ in _children(markers):
        try:
            status = (child / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peak[marker] += int(line.split()[1]) / 1024  # kB
    return peak


def _children(markers: Sequence[str]) -> Iterator[tuple[str, Path, list[str]]]:
    """This process's running children whose command line holds one of `markers`: the first
    it holds, the child's /proc folder and the fields of its stat file after its name."""
    if not PROC.is_dir():
        return
    parent = str(os.getpid())
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # Fields after the command's name, which may hold spaces and parentheses.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        marker = next((m for m in markers if m in command), None)
        if fields[1] == parent and marker is not None:
            yield marker, entry, fields
