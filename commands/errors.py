"""How a refused command reports itself: one line, exit status 1."""

from __future__ import annotations

import argparse

from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import FailureError
from temporalio.service import RPCError


class CommandError(Exception):
    """A problem to report to the user in one line, with exit status 1."""


def error_reason(err: BaseException) -> str:
    """What went wrong, in the words of whoever refused, without exception class names.

    A workflow's update validator raising ValueError("...") reaches the client as an
    ApplicationError whose str() is "ValueError: ..."; the reason is only the "...".
    """
    if isinstance(err, WorkflowUpdateFailedError):
        return error_reason(err.cause)
    if isinstance(err, FailureError | RPCError):
        return err.message
    return str(err)


def error_line(args: argparse.Namespace, err: BaseException) -> str:
    """The text printed for a refused command: `dunwise: invoice A-2: <reason>` for an
    invoice command, `dunwise <command>: <reason>` for the others."""
    if args.command == "invoice":
        return f"dunwise: invoice {args.number}: {error_reason(err)}"
    return f"dunwise {args.command}: {error_reason(err)}"
