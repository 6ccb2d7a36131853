"""Policy files: read and check the YAML, choose a policy for an invoice, export the schema.

Checking reports every problem in a file at once, each with its line and field, so finance
ops can fix a policy in one pass (the first MAX_ERRORS_PER_FILE of them, then a count).

A hostile file is refused quickly and never crashes the check: files over MAX_FILE_BYTES are
not read, YAML aliases are refused where they appear (so an alias bomb never expands),
nesting deeper than MAX_NESTING and integers longer than MAX_INTEGER_DIGITS are refused
while the file is read, and the schema (policies.schema) bounds every value.
"""

from __future__ import annotations

import contextlib
import difflib
import itertools
import json
import os
import re
import types
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from policies.money import from_minor
from policies.schema import MAX_STEPS, Policy, Step, shown

StrPath = str | os.PathLike[str]
SCHEMA_PATH = Path(__file__).with_name("policy.schema.json")
STANDARD = "standard"
# A policy is a page of YAML (the shipped ones are under 1 KiB); PyYAML reads about 100 KiB a
# second, so this bounds a check to a few seconds.
MAX_FILE_BYTES = 256 * 1024
MAX_NESTING = 20  # a policy needs 5 levels (policy, steps, step, late_fee, percent)
MAX_INTEGER_DIGITS = 30
MAX_ERRORS_PER_FILE = 50


@dataclass(frozen=True)
class PolicyError:
    file: str
    line: int | None
    field: str  # like steps[2].at; empty for problems with the file as a whole
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class PolicyFileError(Exception):
    """One or more policy files are invalid; `errors` lists every problem found."""

    def __init__(self, errors: list[PolicyError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(error) for error in self.errors))


# --- reading YAML ----------------------------------------------------------------------------


class _RefusedYaml(yaml.MarkedYAMLError):
    """YAML that is valid but not accepted in a policy file (aliases, deep nesting)."""


class _PolicyYamlLoader(yaml.SafeLoader):
    """SafeLoader with fixes for hand-written policies and bounds for hostile ones.

    Only true/false are booleans, so a country code like NO (Norway) stays a string; and
    unquoted decimals like 10.50 are read as the exact Decimal written, never as a float.
    Aliases (*name) are refused where they appear, before anything is expanded, and so is
    nesting deeper than MAX_NESTING (the composer is recursive).
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            name = event.anchor if len(event.anchor) <= 40 else f"{event.anchor[:40]}..."
            raise _RefusedYaml(
                problem=f"YAML aliases (*{name}) are not allowed in a policy: write the value out",
                problem_mark=event.start_mark,
            )
        if self._depth >= MAX_NESTING:
            raise _RefusedYaml(
                problem=f"nested more than {MAX_NESTING} levels deep", problem_mark=event.start_mark
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_BOOL = "tag:yaml.org,2002:bool"
_PolicyYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_PolicyYamlLoader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _construct_decimal(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Decimal | float:
    text = str(loader.construct_scalar(node)).replace("_", "")
    try:
        value = Decimal(text)
    except InvalidOperation:
        value = None
    if value is not None and value.is_finite():
        return value
    return loader.construct_yaml_float(node)  # .inf, .nan, 1:30.5: the schema refuses them


_PolicyYamlLoader.add_constructor("tag:yaml.org,2002:float", _construct_decimal)


_INT_TAG = "tag:yaml.org,2002:int"


def _oversized_integers(file: str, node: yaml.Node, loc: Loc = ()) -> list[PolicyError]:
    """Integers too long to read, each at its line and field (the node tree has no aliases)."""
    if isinstance(node, yaml.ScalarNode):
        if node.tag == _INT_TAG and len(node.value) > MAX_INTEGER_DIGITS:
            message = f"a number of {len(node.value)} digits is too large"
            return [PolicyError(file, node.start_mark.line + 1, _field_path(loc), message)]
        return []
    if isinstance(node, yaml.MappingNode):
        children = [(key.value, value) for key, value in node.value]
    else:
        children = list(enumerate(node.value))
    return [
        error
        for part, child in children
        for error in _oversized_integers(file, child, (*loc, part))
    ]


def _construct_bounded_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    # int() of thousands of digits is slow, and refused past 4300; no policy needs more than 10.
    # _oversized_integers reports these with their field first; this is the backstop.
    if len(str(node.value)) > MAX_INTEGER_DIGITS:
        raise _RefusedYaml(
            problem=f"a number of {len(node.value)} digits is too large",
            problem_mark=node.start_mark,
        )
    return loader.construct_yaml_int(node)


_PolicyYamlLoader.add_constructor(_INT_TAG, _construct_bounded_int)


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

    loader: _PolicyYamlLoader | None = None
    try:
        # The reader checks the characters as it is made: inside the try.
        loader = _PolicyYamlLoader(text)
        root = loader.get_single_node()
        if root is not None and (oversized := _oversized_integers(file, root)):
            return _Checked(None, oversized, None)
        data = None if root is None else loader.construct_document(root)
    except _RefusedYaml as error:
        mark = error.problem_mark
        return failed(str(error.problem), None if mark is None else mark.line + 1)
    except yaml.MarkedYAMLError as error:
        return failed(*_syntax_error(error))
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
        PolicyError(file, line, _field_path(loc), f"key {shown(loc[-1])} appears twice")
        for loc, line in itertools.islice(_duplicate_keys(root, ()), MAX_ERRORS_PER_FILE)
    ]
    policy: Policy | None = None
    try:
        policy = Policy.model_validate(data)
    except ValidationError as error:
        # Only the reported ones are located: each lookup walks the file's nodes.
        for detail in error.errors()[:MAX_ERRORS_PER_FILE]:
            loc = tuple(detail["loc"])
            errors.append(
                PolicyError(file, _line_of(root, loc), _field_path(loc), _message(detail))
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
            yield PolicyError(file, _line_of(root, loc), _field_path(loc), _message(detail))


def _unknown_templates(
    file: str, root: yaml.Node, steps: Mapping[int, Step], templates: Collection[str]
) -> Iterator[PolicyError]:
    for index, step in steps.items():
        if step.template is not None and step.template not in templates:
            loc = ("steps", index, "template")
            yield PolicyError(
                file,
                _line_of(root, loc),
                _field_path(loc),
                f"no message template {step.template!r}; known: {', '.join(sorted(templates))}",
            )


def _existing_templates() -> set[str]:
    # Imported here, not at the top: policies/ stays free of Jinja2 and of activities/ for
    # everything else that imports this module.
    from activities.rendering import available_templates

    return available_templates()


def _syntax_error(error: yaml.MarkedYAMLError) -> tuple[str, int | None]:
    message = f"YAML syntax error: {error.problem or error.context or 'invalid YAML'}"
    if error.problem and error.context and error.context_mark:
        # The context ("while parsing a flow mapping") often starts where the mistake is.
        message += f" ({error.context} on line {error.context_mark.line + 1})"
    mark = error.problem_mark or error.context_mark
    return message, None if mark is None else mark.line + 1


# --- mapping pydantic errors to YAML lines -------------------------------------------------


Loc = tuple[int | str, ...]


def _line_of(root: yaml.Node, loc: Loc) -> int:
    """Line of the deepest YAML node on the path `loc` (keys by their key's line)."""
    node = root
    line = root.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            entry = next(
                ((key, value) for key, value in node.value if key.value == str(part)), None
            )
            if entry is None:
                break
            line = entry[0].start_mark.line + 1
            node = entry[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _duplicate_keys(node: yaml.Node, loc: Loc) -> Iterator[tuple[Loc, int]]:
    # PyYAML keeps the last of two equal keys silently; a policy author means one of them.
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                continue
            if key.value in seen:
                yield (*loc, key.value), key.start_mark.line + 1
            seen.add(key.value)
            yield from _duplicate_keys(value, (*loc, key.value))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*loc, index))


def _field_path(loc: Loc) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            # A key written as a whole paragraph is cut, so the line stays readable.
            name = str(part) if len(str(part)) <= 64 else shown(str(part))
            path += f".{name}" if path else name
    return path


def _message(detail: ErrorDetails) -> str:
    kind = detail["type"]
    if kind == "steps_order":
        return detail["msg"]
    if kind == "value_error":
        return str(detail["ctx"]["error"])
    if kind == "extra_forbidden":
        return _unknown_key_message(tuple(detail["loc"]))
    message = detail["msg"]
    message = message[:1].lower() + message[1:]
    value = detail.get("input")
    if kind != "missing" and isinstance(value, str | int | Decimal | float):
        if isinstance(value, str):
            message += f", not {shown(value)}"
        else:
            text = str(value)
            message += f", not {text if len(text) <= 40 else text[:40] + '...'}"
    return message


def _unknown_key_message(loc: Loc) -> str:
    key = str(loc[-1])
    model = _model_at(loc[:-1])
    if model is None:
        return f"unknown key {shown(key)}"
    allowed = list(model.model_fields)
    close = difflib.get_close_matches(key, allowed, n=1) if len(key) <= 64 else []
    if close:
        return f"unknown key {shown(key)}: did you mean {close[0]!r}?"
    return f"unknown key {shown(key)}: expected one of {', '.join(allowed)}"


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The model that validates the mapping found at `loc` inside a policy."""
    current: Any = Policy
    for part in loc:
        if isinstance(part, int) and get_origin(current) is list:
            current = _unwrap(get_args(current)[0])
        elif isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = _unwrap(field.annotation)
        else:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated and Optional: `Annotated[X, ...] | None` -> X."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            options = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(options) != 1:
                return annotation
            annotation = options[0]
        else:
            return annotation


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
                    _line_of(checked.root, ("name",)),
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
