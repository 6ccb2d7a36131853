"""How urgent a collector task is: the names, least urgent first.

Imports nothing, so the command line can offer them as choices without loading the policy
schema (policies.schema re-exports both).
"""

from __future__ import annotations

from typing import Literal

Priority = Literal["low", "normal", "high", "urgent"]
PRIORITIES: tuple[Priority, ...] = ("low", "normal", "high", "urgent")
