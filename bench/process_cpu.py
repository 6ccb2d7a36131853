"""The CPU time this process's children have used, by what they run.

Read from Linux's /proc: elsewhere every figure is 0. A child that has exited no longer
counts, so take the figures of children that live through what is measured (a server, a
worker's processes).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def children_cpu_seconds(markers: Sequence[str]) -> dict[str, float]:
    """User and system CPU seconds of this process's running children, summed by the first of
    `markers` that occurs in each child's command line (children with none are left out)."""
    used = dict.fromkeys(markers, 0.0)
    parent = os.getpid()
    if not PROC.is_dir():
        return used
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # Fields after the command's name, which may hold spaces and parentheses.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) != parent:
            continue
        marker = next((m for m in markers if m in command), None)
        if marker is not None:
            used[marker] += (int(fields[11]) + int(fields[12])) / _TICKS
    return used
