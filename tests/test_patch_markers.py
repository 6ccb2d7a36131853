"""`takes_change`: one marker for the bundled changes, a marker of its own for a later one.

A run that recorded the newest bundle before a later change existed must replay without it:
the later change is not in the bundle, so the run keeps its old branch.
"""

from __future__ import annotations

import ast
import uuid
from datetime import timedelta
from pathlib import Path

from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.worker import Replayer, Worker

from workflows import invoice_patches
from workflows.invoice_patches import BUNDLES, takes_change

# This module is loaded again in the workflow sandbox, which must not load the rest of dunwise.
with workflow.unsafe.imports_passed_through():
    from temporal_client import time_skipping_environment
    from worker import STRICT_RUNNER

LATER_CHANGE = "a-change-made-later"


@workflow.defn(name="AsksForChanges")
class BeforeTheLaterChange:
    @workflow.run
    async def run(self) -> bool:
        taken = takes_change(invoice_patches.PUBLISH_CHANGES_ONLY)
        await workflow.sleep(timedelta(minutes=1))
        return taken


@workflow.defn(name="AsksForChanges")
class WithTheLaterChange:
    @workflow.run
    async def run(self) -> bool:
        taken = takes_change(invoice_patches.PUBLISH_CHANGES_ONLY)
        await workflow.sleep(timedelta(minutes=1))
        if takes_change(LATER_CHANGE):
            await workflow.sleep(timedelta(minutes=1))  # a command older runs lack
        return taken


def markers(history) -> list[bytes]:
    return [
        event.SerializeToString()
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
    ]


async def test_a_run_records_one_marker_and_replays_without_a_later_change() -> None:
    env = await time_skipping_environment()
    async with env:
        queue = f"patches-{uuid.uuid4()}"
        async with Worker(
            env.client,
            task_queue=queue,
            workflows=[BeforeTheLaterChange],
            workflow_runner=STRICT_RUNNER,
        ):
            handle = await env.client.start_workflow(
                BeforeTheLaterChange.run, id=f"asks-{uuid.uuid4()}", task_queue=queue
            )
            assert await handle.result() is True
        history = await handle.fetch_history()
    [marker] = markers(history)
    newest = next(iter(BUNDLES))
    assert newest.encode() in marker
    assert invoice_patches.PUBLISH_CHANGES_ONLY.encode() not in marker
    # The same run on code with a later change: it replays, keeping the branch it took.
    await Replayer(workflows=[WithTheLaterChange], workflow_runner=STRICT_RUNNER).replay_workflow(
        history
    )


def test_each_bundle_is_every_change_declared_before_its_marker() -> None:
    """Adding an id above a bundle's marker, or to its set, would change what runs that
    recorded the marker replay; later ids go below the newest bundle."""
    tree = ast.parse(Path(invoice_patches.__file__).read_text())
    declared = [
        node.targets[0].id
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.Constant)
    ]
    values = {name: getattr(invoice_patches, name) for name in declared}
    changes = [name for name in declared if values[name] not in BUNDLES]
    for marker, bundled in BUNDLES.items():
        [name] = [name for name in declared if values[name] == marker]
        before = [c for c in changes if declared.index(c) < declared.index(name)]
        assert {values[c] for c in before} == bundled, marker
    # Newest first: each bundle holds the one after it.
    ordered = list(BUNDLES.values())
    assert all(older < newer for newer, older in zip(ordered, ordered[1:], strict=False))
