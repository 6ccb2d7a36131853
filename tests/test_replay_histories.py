"""Saved workflow histories must replay on the current code: a change that breaks
determinism for invoices already in flight fails here.

Record new histories (after a deliberate, versioned change) with:
    DUNWISE_RECORD_HISTORIES=1 pytest tests/test_invoice_lifecycle.py
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from worker import STRICT_RUNNER, WORKFLOWS

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_histories_are_saved():
    assert len(HISTORIES) >= 6, "tests/histories/ should hold the lifecycle histories"


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays(path: Path):
    history = WorkflowHistory.from_json(f"invoice-{path.stem}", path.read_text())
    replayer = Replayer(
        workflows=WORKFLOWS, workflow_runner=STRICT_RUNNER, data_converter=pydantic_data_converter
    )
    await replayer.replay_workflow(history)
