"""`dunwise policy check`: every error of every policy file, with file, line and field;
`dunwise policy schema`: the JSON Schema editors validate policies with.

Reading policies loads the policy schema and the message templates' names, never Temporal,
the database or the web app: checking a file answers at once.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from activities.template_files import available_templates
from policies.loader import check_policy_files, policy_json_schema


def policy_check(paths: Sequence[Path]) -> int:
    errors = check_policy_files(paths, templates=available_templates())
    for error in errors:
        print(error, file=sys.stderr)
    if errors:
        print(f"{len(errors)} error(s)", file=sys.stderr)
        return 1
    print(f"{len(paths)} policy file(s) OK")
    return 0


def policy_schema(output: Path | None) -> None:
    """Write the schema to `output`, or print it."""
    text = json.dumps(policy_json_schema(), indent=2) + "\n"
    if output:
        output.write_text(text)
    else:
        print(text, end="")
