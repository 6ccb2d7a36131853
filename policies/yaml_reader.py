"""Reading policy YAML safely: text in, YAML nodes and plain values out, bounded throughout.

Invariants, for any input text:
- YAML aliases (*name) are refused where they appear, before anything is expanded, so an
  alias bomb never grows; the node tree handed back has no aliases (it is a tree).
- Nesting deeper than MAX_NESTING is refused while the file is composed (the composer is
  recursive, so this also bounds the stack).
- Integers longer than MAX_INTEGER_DIGITS are never converted (int() of thousands of digits
  is slow, and refused past 4300); oversized_integers reports them with their field first.
- Only true/false (any case) are booleans, so a country code like NO stays a string; unquoted
  decimals like 10.50 become the exact Decimal written, never a float.
- MAX_FILE_BYTES bounds the text handed to the loader: policies.loader refuses a larger file
  without reading it.

Refusals are RefusedYaml, a yaml.MarkedYAMLError carrying the line of the problem. The rest
works on the node tree once read: the line of a field, keys written twice, and syntax errors
worded for a policy author.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation

import yaml

from policies.errors import Loc, PolicyError, field_path

# A policy is a page of YAML (the shipped ones are under 1 KiB); PyYAML reads about 100 KiB a
# second, so this bounds a check to a few seconds.
MAX_FILE_BYTES = 256 * 1024
MAX_NESTING = 20  # a policy needs 5 levels (policy, steps, step, late_fee, percent)
MAX_INTEGER_DIGITS = 30


class RefusedYaml(yaml.MarkedYAMLError):
    """YAML that is valid but not accepted in a policy file (aliases, deep nesting)."""


class PolicyYamlLoader(yaml.SafeLoader):
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
            raise RefusedYaml(
                problem=f"YAML aliases (*{name}) are not allowed in a policy: write the value out",
                problem_mark=event.start_mark,
            )
        if self._depth >= MAX_NESTING:
            raise RefusedYaml(
                problem=f"nested more than {MAX_NESTING} levels deep", problem_mark=event.start_mark
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_BOOL = "tag:yaml.org,2002:bool"
PolicyYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
PolicyYamlLoader.add_implicit_resolver(
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


PolicyYamlLoader.add_constructor("tag:yaml.org,2002:float", _construct_decimal)


_INT_TAG = "tag:yaml.org,2002:int"


def oversized_integers(file: str, node: yaml.Node, loc: Loc = ()) -> list[PolicyError]:
    """Integers too long to read, each at its line and field (the node tree has no aliases)."""
    if isinstance(node, yaml.ScalarNode):
        if node.tag == _INT_TAG and len(node.value) > MAX_INTEGER_DIGITS:
            message = f"a number of {len(node.value)} digits is too large"
            return [PolicyError(file, node.start_mark.line + 1, field_path(loc), message)]
        return []
    if isinstance(node, yaml.MappingNode):
        children = [(key.value, value) for key, value in node.value]
    else:
        children = list(enumerate(node.value))
    return [
        error for part, child in children for error in oversized_integers(file, child, (*loc, part))
    ]


def _construct_bounded_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    # int() of thousands of digits is slow, and refused past 4300; no policy needs more than 10.
    # oversized_integers reports these with their field first; this is the backstop.
    if len(str(node.value)) > MAX_INTEGER_DIGITS:
        raise RefusedYaml(
            problem=f"a number of {len(node.value)} digits is too large",
            problem_mark=node.start_mark,
        )
    return loader.construct_yaml_int(node)


PolicyYamlLoader.add_constructor(_INT_TAG, _construct_bounded_int)


def syntax_error(error: yaml.MarkedYAMLError) -> tuple[str, int | None]:
    message = f"YAML syntax error: {error.problem or error.context or 'invalid YAML'}"
    if error.problem and error.context and error.context_mark:
        # The context ("while parsing a flow mapping") often starts where the mistake is.
        message += f" ({error.context} on line {error.context_mark.line + 1})"
    mark = error.problem_mark or error.context_mark
    return message, None if mark is None else mark.line + 1


def line_of(root: yaml.Node, loc: Loc) -> int:
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


def duplicate_keys(node: yaml.Node, loc: Loc) -> Iterator[tuple[Loc, int]]:
    # PyYAML keeps the last of two equal keys silently; a policy author means one of them.
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                continue
            if key.value in seen:
                yield (*loc, key.value), key.start_mark.line + 1
            seen.add(key.value)
            yield from duplicate_keys(value, (*loc, key.value))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from duplicate_keys(item, (*loc, index))
