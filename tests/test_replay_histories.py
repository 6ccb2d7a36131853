"""Saved workflow histories must replay on the current code: a change that breaks
determinism for invoices already in flight fails here.

Record new histories (after a deliberate, versioned change) with:
    DUNWISE_RECORD_HISTORIES=1 pytest tests/test_invoice_lifecycle.py ...
A history's name ends in the bundle of changes its run recorded (`HISTORY_ENDINGS`):
`NAME.json` holds a run from before any bundle (one marker per change),
`NAME.one_marker.json` the same scenario on the first bundle, and so on. A new bundle gives a
new ending, so recording never overwrites a history of an older branch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.invoice_harness import HISTORY_ENDINGS, UNBUNDLED_ENDING, bundle_recorded
from worker import STRICT_RUNNER, WORKFLOWS
from workflows.invoice_patches import BUNDLES

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_histories_are_saved():
    assert len(HISTORIES) >= 6, "tests/histories/ should hold the lifecycle histories"


def test_each_scenario_is_saved_on_every_bundle():
    """Both branches of every `takes_change` stay replayed: runs that recorded a marker per
    change, and the same scenarios run on each bundle since, which recorded its marker alone.
    A scenario saved on a bundle is saved on the newest one too."""
    assert list(HISTORY_ENDINGS) == list(BUNDLES), "every bundle names its histories"
    names = {path.name for path in HISTORIES}
    bundled = set()
    for path in HISTORIES:
        ending = HISTORY_ENDINGS.get(bundle_recorded(load(path)), UNBUNDLED_ENDING)
        assert path.name.endswith(ending), f"{path.name} holds the marker of another ending"
        if ending != UNBUNDLED_ENDING:
            bundled.add(path.name.removesuffix(ending))
    newest = next(iter(HISTORY_ENDINGS.values()))
    endings = [UNBUNDLED_ENDING, *HISTORY_ENDINGS.values()]
    assert all(scenario + newest in names for scenario in bundled), "each is saved on the newest"
    on_every_one = [s for s in bundled if all(s + ending in names for ending in endings)]
    assert len(on_every_one) >= 20


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(f"invoice-{path.stem}", path.read_text())


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays(path: Path):
    history = load(path)
    replayer = Replayer(
        workflows=WORKFLOWS, workflow_runner=STRICT_RUNNER, data_converter=pydantic_data_converter
    )
    await replayer.replay_workflow(history)
