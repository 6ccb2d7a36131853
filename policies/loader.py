"""Policy files: read and check the YAML, choose a policy for an invoice, export the schema.

Checking reports every problem in a file at once, each with its line and field, so finance
ops can fix a policy in one pass (the first MAX_ERRORS_PER_FILE of them, then a count).

A hostile file is refused quickly and never crashes the check: files over MAX_FILE_BYTES are
not read, the YAML is read by policies.yaml_reader (aliases refused where they appear,
nesting and integer length bounded while the file is read), and the schema
(policies.schema) bounds every value.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from policies.errors import PolicyError, PolicyFileError, error_message, field_path
from policies.money import from_minor
from policies.schema import MAX_STEPS, Policy, Step, shown
from policies.yaml_reader import (
    MAX_FILE_BYTES,
    PolicyYamlLoader,
    RefusedYaml,
    duplicate_keys,
    line_of,
    oversized_integers,
    syntax_error,
)

StrPath = str | os.PathLike[str]
# The policies dunwise ships; DUNWISE_POLICY_DIR names another folder.
SHIPPED_POLICIES = Path(__file__).parent
SCHEMA_PATH = Path(__file__).with_name("policy.schema.json")
STANDARD = "standard"
MAX_ERRORS_PER_FILE = 50


@dataclass
class _Checked:
    policy: Policy | None
    errors: list[PolicyError]
    root: yaml.Node | None


def _check_file(path: StrPath, templates: Collection[str] | None = None) -> _Checked:
    """Every problem in one file, sorted by line; with `templates`, also steps naming a
    message template not among them."""
    file = os.fspath(path)

    def failed(message: str, line: int | None = None) -> _Checked:
        return _Checked(None, [PolicyError(file, line, "", message)], None)

    try:
        with Path(path).open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
        text = raw.decode("utf-8")
    except FileNotFoundError:
        return failed("file not found")
    except IsADirectoryError:
        return failed("is a folder, not a policy file")
    except UnicodeDecodeError:
        return failed("is not UTF-8 text")
    except OSError as error:
        return failed(f"cannot read: {error.strerror}")
    if len(raw) > MAX_FILE_BYTES:
        return failed(f"is larger than {MAX_FILE_BYTES // 1024} KiB: not a policy file")

    loader: PolicyYamlLoader | None = None
    try:
        # The reader checks the characters as it is made: inside the try.
        loader = PolicyYamlLoader(text)
        root = loader.get_single_node()
        if root is not None and (oversized := oversized_integers(file, root)):
            return _Checked(None, oversized, None)
        data = None if root is None else loader.construct_document(root)
    except RefusedYaml as error:
        mark = error.problem_mark
        return failed(str(error.problem), None if mark is None else mark.line + 1)
    except yaml.MarkedYAMLError as error:
        return failed(*syntax_error(error))
    except yaml.reader.ReaderError as error:
        line = text.count("\n", 0, error.position) + 1
        return failed(f"character {chr(error.character)!r} is not allowed in YAML", line)
    except yaml.YAMLError as error:
        return failed(f"YAML syntax error: {error}")
    finally:
        if loader is not None:
            loader.dispose()

    if root is None or data is None:
        return failed("file is empty")
    if not isinstance(root, yaml.MappingNode):
        return failed("a policy must be a mapping with keys like name, version and steps", 1)

    errors = [
        PolicyError(file, line, field_path(loc), f"key {shown(loc[-1])} appears twice")
        for loc, line in itertools.islice(duplicate_keys(root, ()), MAX_ERRORS_PER_FILE)
    ]
    policy: Policy | None = None
    try:
        policy = Policy.model_validate(data)
    except ValidationError as error:
        # Only the reported ones are located: each lookup walks the file's nodes.
        for detail in error.errors()[:MAX_ERRORS_PER_FILE]:
            loc = tuple(detail["loc"])
            errors.append(
                PolicyError(file, line_of(root, loc), field_path(loc), error_message(detail))
            )
        hidden = error.error_count() - MAX_ERRORS_PER_FILE
        if hidden > 0:
            # At the last line shown, so it sorts after the problems it follows.
            last = max(problem.line or 0 for problem in errors)
            errors.append(PolicyError(file, last, "", f"and {hidden} more problems, not shown"))

    # The step order and template checks also run when other parts of the file are invalid,
    # on every step that is valid on its own, so one pass shows every problem. Over MAX_STEPS
    # the schema has said so already.
    raw_steps = data.get("steps") if isinstance(data, dict) else None
    raw_steps = raw_steps if isinstance(raw_steps, list) and len(raw_steps) <= MAX_STEPS else []
    steps = _valid_steps(raw_steps)
    if len(steps) < len(raw_steps):
        # With every step valid the schema has checked the order itself.
        errors.extend(_steps_out_of_order(file, root, raw_steps, steps))
    if templates is not None:
        errors.extend(_unknown_templates(file, root, steps, templates))

    errors = sorted(dict.fromkeys(errors), key=lambda error: error.line or 0)
    return _Checked(None if errors else policy, errors, root)


def _valid_steps(raw_steps: list[Any]) -> dict[int, Step]:
    """The steps that are valid on their own, by their index in the file."""
    valid: dict[int, Step] = {}
    for index, raw in enumerate(raw_steps):
        with contextlib.suppress(ValidationError):
            valid[index] = Step.model_validate(raw)
    return valid


def _steps_out_of_order(
    file: str, root: yaml.Node, raw_steps: list[Any], steps: Mapping[int, Step]
) -> Iterator[PolicyError]:
    """The schema's order check on the valid steps alone, each error at its step's `at`."""
    indexes = list(steps)
    try:
        Policy.model_validate({"steps": [raw_steps[index] for index in indexes]})
    except ValidationError as error:
        for detail in error.errors():
            if detail["type"] != "steps_order":
                continue  # name, version and the like: reported by the full check
            _, position, *rest = detail["loc"]
            assert isinstance(position, int)
            loc = ("steps", indexes[position], *rest)
            yield PolicyError(file, line_of(root, loc), field_path(loc), error_message(detail))


def _unknown_templates(
    file: str, root: yaml.Node, steps: Mapping[int, Step], templates: Collection[str]
) -> Iterator[PolicyError]:
    for index, step in steps.items():
        if step.template is not None and step.template not in templates:
            loc = ("steps", index, "template")
            yield PolicyError(
                file,
                line_of(root, loc),
                field_path(loc),
                f"no message template {step.template!r}; known: {', '.join(sorted(templates))}",
            )


def _existing_templates() -> set[str]:
    # Imported here, not at the top: policies/ stays free of Jinja2 and of activities/ for
    # everything else that imports this module.
    from activities.rendering import available_templates

    return available_templates()


# --- public API ------------------------------------------------------------------------------


def load_policy(path: StrPath, templates: Collection[str] | None = None) -> Policy:
    """Read one policy file; PolicyFileError lists every problem in it.

    Steps may only name message templates in `templates`, by default those that exist in
    templates/messages/.
    """
    if templates is None:
        templates = _existing_templates()
    checked = _check_file(path, templates)
    if checked.policy is None:
        raise PolicyFileError(checked.errors)
    return checked.policy


def check_policy_files(
    paths: Iterable[StrPath], templates: Collection[str] | None = None
) -> list[PolicyError]:
    """Every problem in the given files, sorted by file then line, including two files that
    use one policy name and, when `templates` is given, steps that name a message template
    not among them."""
    return _check_files(paths, templates)[1]


def _check_files(
    paths: Iterable[StrPath], templates: Collection[str] | None
) -> tuple[list[Policy], list[PolicyError]]:
    policies: list[Policy] = []
    errors: list[PolicyError] = []
    first_file_of: dict[str, str] = {}
    for path in paths:
        checked = _check_file(path, templates)
        errors.extend(checked.errors)
        if checked.policy is None or checked.root is None:
            continue
        policies.append(checked.policy)
        name = checked.policy.name
        if name in first_file_of:
            errors.append(
                PolicyError(
                    os.fspath(path),
                    line_of(checked.root, ("name",)),
                    "name",
                    f"policy name {name!r} is already used by {first_file_of[name]}",
                )
            )
        else:
            first_file_of[name] = os.fspath(path)
    errors.sort(key=lambda error: (error.file, error.line or 0))
    return policies, errors


def load_policies(folder: StrPath, templates: Collection[str] | None = None) -> dict[str, Policy]:
    """Every *.yaml policy in `folder` by name; PolicyFileError if any file is invalid.

    Steps may only name message templates in `templates`, by default those that exist in
    templates/messages/.
    """
    if not Path(folder).is_dir():
        raise PolicyFileError([PolicyError(os.fspath(folder), None, "", "folder not found")])
    if templates is None:
        templates = _existing_templates()
    policies, errors = _check_files(sorted(Path(folder).glob("*.yaml")), templates)
    if errors:
        raise PolicyFileError(errors)
    return {policy.name: policy for policy in policies}


def select_policy(
    policies: Mapping[str, Policy] | Iterable[Policy],
    segment: str | None,
    balance_minor: int,
    exponent: int = 2,
) -> Policy | None:
    """The policy for an invoice of this customer segment and open balance, or None.

    A policy applies when it names the segment (or names none) and the balance reaches its
    min_balance. Among several: one naming the segment beats a catch-all, then the higher
    min_balance (the narrower rule) wins, then the one called "standard", then by name.
    """
    candidates = policies.values() if isinstance(policies, Mapping) else policies
    balance = from_minor(balance_minor, exponent)
    matching = [
        policy
        for policy in candidates
        if (not policy.applies_to.segments or segment in policy.applies_to.segments)
        and balance >= policy.applies_to.min_balance
    ]
    if not matching:
        return None
    return min(
        matching,
        key=lambda policy: (
            segment not in policy.applies_to.segments,
            -policy.applies_to.min_balance,
            policy.name != STANDARD,
            policy.name,
        ),
    )


def policy_json_schema() -> dict[str, Any]:
    """JSON Schema of a policy file, for editors (yaml-language-server, IDEs)."""
    schema = Policy.model_json_schema()
    schema["title"] = "dunwise dunning policy"
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def write_json_schema(path: StrPath = SCHEMA_PATH) -> None:
    Path(path).write_text(json.dumps(policy_json_schema(), indent=2) + "\n", encoding="utf-8")
