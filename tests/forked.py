"""Run one call in a forked child process with a time limit, for inputs that might hang.

A hang or a crash in the child fails the test instead of stalling (or exhausting) the test
run: the child is killed when the time is up. The result travels back pickled, so the call
must return plain data; an exception in the child fails the test with its traceback.
"""

from __future__ import annotations

import multiprocessing
import traceback
from collections.abc import Callable
from typing import Any

import pytest


def run_forked(call: Callable[..., Any], *args: Any, timeout: float, label: str = "") -> Any:
    """`call(*args)` in a child process; fails the test if it raises or outlasts `timeout`.

    `label` names the input in a failure (by default the call and its arguments).
    """
    label = label or f"{call.__name__}{args!r}"
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)

    def child() -> None:
        try:
            sender.send(("returned", call(*args)))
        except BaseException:  # everything must reach the parent
            sender.send(("raised", traceback.format_exc()))

    process = context.Process(target=child, daemon=True)
    process.start()
    sender.close()
    try:
        if not receiver.poll(timeout):
            pytest.fail(f"{label} did not finish within {timeout} s")
        try:
            outcome, value = receiver.recv()
        except EOFError:
            process.join(5)
            pytest.fail(f"{label} died with exit code {process.exitcode}")
    finally:
        process.kill()
        process.join()
        receiver.close()
    if outcome == "raised":
        pytest.fail(f"{label} raised an undocumented exception:\n{value}")
    return value
