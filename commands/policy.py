"""`dunwise policy check`: every error of every policy file, with file, line and field."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from activities.rendering import available_templates
from policies.loader import check_policy_files


def policy_check(paths: Sequence[Path]) -> int:
    errors = check_policy_files(paths, templates=available_templates())
    for error in errors:
        print(error, file=sys.stderr)
    if errors:
        print(f"{len(errors)} error(s)", file=sys.stderr)
        return 1
    print(f"{len(paths)} policy file(s) OK")
    return 0
