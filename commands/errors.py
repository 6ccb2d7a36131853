"""How a refused command reports itself: one line, exit status 1."""

from __future__ import annotations

import argparse
import sys


class CommandError(Exception):
    """A problem to report to the user in one line, with exit status 1."""


def error_reason(err: BaseException) -> str:
    """What went wrong, in the words of whoever refused, without exception class names.

    A workflow's update validator raising ValueError("...") reaches the client as an
    ApplicationError whose str() is "ValueError: ..."; the reason is only the "...".
    """
    if isinstance(err, loaded_classes("temporalio.client.WorkflowUpdateFailedError")):
        return error_reason(err.cause)
    if isinstance(
        err, loaded_classes("temporalio.exceptions.FailureError", "temporalio.service.RPCError")
    ):
        return err.message
    return str(err)


def loaded_classes(*names: str) -> tuple[type[BaseException], ...]:
    """The exception classes named like "temporalio.service.RPCError" whose modules are
    already imported; an `isinstance` test against them needs no import.

    An error of a module that was never imported cannot have been raised, so a command that
    never loaded Temporal is not made to load it just to word its error.
    """
    found = []
    for name in names:
        module, _, attribute = name.rpartition(".")
        if (loaded := sys.modules.get(module)) is not None:
            found.append(getattr(loaded, attribute))
    return tuple(found)


def error_line(args: argparse.Namespace, err: BaseException) -> str:
    """The text printed for a refused command: `dunwise: invoice A-2: <reason>` for an
    invoice command, `dunwise <command>: <reason>` for the others."""
    if args.command == "invoice":
        return f"dunwise: invoice {args.number}: {error_reason(err)}"
    return f"dunwise {args.command}: {error_reason(err)}"
