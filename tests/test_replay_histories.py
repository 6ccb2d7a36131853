"""Saved workflow histories must replay on the current code: a change that breaks
determinism for invoices already in flight fails here.

Record new histories (after a deliberate, versioned change) with:
    DUNWISE_RECORD_HISTORIES=1 pytest tests/test_invoice_lifecycle.py
and keep the ones they would overwrite: `NAME.json` holds a run from before
`EVERY_CHANGE_ABOVE` (one marker per change), `NAME.one_marker.json` the same scenario since.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from worker import STRICT_RUNNER, WORKFLOWS
from workflows.invoice_patches import EVERY_CHANGE_ABOVE

ONE_MARKER = ".one_marker.json"
HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_histories_are_saved():
    assert len(HISTORIES) >= 6, "tests/histories/ should hold the lifecycle histories"


def test_each_scenario_is_saved_from_before_and_after_the_one_marker():
    """Both branches of every `takes_change` stay replayed: runs that recorded a marker per
    change, and the same scenarios run since, which recorded `EVERY_CHANGE_ABOVE` alone."""
    marker = EVERY_CHANGE_ABOVE.encode()
    since = [path for path in HISTORIES if path.name.endswith(ONE_MARKER)]
    for path in HISTORIES:
        holds_marker = any(marker in event.SerializeToString() for event in load(path).events)
        assert holds_marker == (path in since), path.name
    names = {path.name for path in HISTORIES}
    for path in since:
        assert path.name.replace(ONE_MARKER, ".json") in names, path.name
    assert len(since) >= 20


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(f"invoice-{path.stem}", path.read_text())


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays(path: Path):
    history = load(path)
    replayer = Replayer(
        workflows=WORKFLOWS, workflow_runner=STRICT_RUNNER, data_converter=pydantic_data_converter
    )
    await replayer.replay_workflow(history)
