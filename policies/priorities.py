"""How urgent a collector task is: the names, least urgent first.

Imports nothing, so the command line can offer them as choices without loading the policy
schema (policies.schema re-exports both).
"""

from __future__ import annotations

from typing import Literal

Priority = Literal["low", "normal", "high", "urgent"]
PRIORITIES: tuple[Priority, ...] = ("low", "normal", "high", "urgent")
# How urgent each is, for comparing and sorting: low 0 ... urgent 3.
PRIORITY_RANK: dict[str, int] = {priority: rank for rank, priority in enumerate(PRIORITIES)}
