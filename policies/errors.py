"""What a problem in a policy file is, and how pydantic's errors are worded for its author.

A PolicyError names the file, the line when known, the field as a path like steps[2].at, and
a message written for finance ops; values quoted back in messages are cut short (shown), so
a hostile file cannot flood the report.
"""

from __future__ import annotations

import difflib
import types
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from policies.schema import Policy, shown

# A pydantic error location: keys and list indexes from the top of a policy.
Loc = tuple[int | str, ...]


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


def field_path(loc: Loc) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            # A key written as a whole paragraph is cut, so the line stays readable.
            name = str(part) if len(str(part)) <= 64 else shown(str(part))
            path += f".{name}" if path else name
    return path


def error_message(detail: ErrorDetails) -> str:
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
