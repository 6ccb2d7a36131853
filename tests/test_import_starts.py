"""`dunwise import` starts every imported invoice's workflow, many at once, and loses none.

A real dev server (the one `dunwise run` embeds) with the dunwise worker polling, and a real
ledger on SQLite and PostgreSQL. The import runs as the installed command in a subprocess;
the failure paths call the start step directly against a live server and a stopped one.
No figure here is timed: speed is bench/import.py's job.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RetryConfig, RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from commands.errors import CommandError
from commands.importing import START_CONCURRENCY, _start_workflows, start_all
from invoices import workflow_id
from ledger.db import make_engine
from policies.loader import SHIPPED_POLICIES, load_policies
from settings import Settings
from tests.invoice_harness import dev_server_environment
from worker import build_worker
from workflows.invoice import InvoiceWorkflow
from workflows.models import InvoiceInput

HEADER = (
    "invoice_number,customer_id,customer_name,email,phone,timezone,currency,amount,issued_on,"
    "due_on,segment"
)
INVOICES = 300
# A query's default deadline is 30 s: a loaded machine may take longer to answer the 300.
QUERY_PATIENCE = timedelta(minutes=2)
CUSTOMERS = 40
# Longer than the dev server takes for one search attribute value (2 KiB): that start fails.
OVERSIZED = "c" * 3000


@pytest_asyncio.fixture(scope="module")
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    env = await dev_server_environment()
    async with env:
        yield env


def import_settings(tmp_path: Path, ledger_url: str, env: WorkflowEnvironment) -> Settings:
    return Settings(
        _env_file=None,
        data_dir=tmp_path / "data",
        database_url=ledger_url,
        temporal_address=env.client.service_client.config.target_host,
        temporal_task_queue=f"import-{uuid.uuid4().hex[:8]}",
        outbox_dir=tmp_path / "outbox",
        erp_journal=tmp_path / "erp-journal.jsonl",
    )


def invoices_csv(tmp_path: Path, tag: str) -> tuple[Path, list[str]]:
    """INVOICES invoices of CUSTOMERS customers, due far ahead: no reminder falls due."""
    numbers = [f"{tag}-{n:04d}" for n in range(1, INVOICES + 1)]
    segments = ["smb", "mid-market", "enterprise", "high-risk"]
    lines = []
    for n, number in enumerate(numbers):
        c = n % CUSTOMERS
        lines.append(
            f"{number},{tag}-c{c},Customer {c},ap@c{c}.example,+1415555{100 + c:04d},"
            f"America/New_York,USD,{100 + n}.25,2026-01-05,2099-0{1 + n % 9}-15,{segments[c % 4]}"
        )
    path = tmp_path / "invoices.csv"
    path.write_text("\n".join([HEADER, *lines]) + "\n")
    return path, numbers


def dunwise_import(settings: Settings, path: Path, cwd: Path) -> subprocess.CompletedProcess:
    """The installed command, configured by its environment alone, its output piped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUNWISE_")}
    env.update(
        DUNWISE_DATA_DIR=str(settings.data_dir),
        DUNWISE_DATABASE_URL=settings.effective_database_url,
        DUNWISE_TEMPORAL_ADDRESS=str(settings.temporal_address),
        DUNWISE_TEMPORAL_TASK_QUEUE=settings.temporal_task_queue,
    )
    return subprocess.run(
        [str(Path(sys.executable).with_name("dunwise")), "import", str(path)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )


async def run_ids(client: Client, numbers: list[str]) -> dict[str, tuple[str, str, str]]:
    """Each invoice's workflow: (status, workflow type, run id)."""
    gate = asyncio.Semaphore(32)

    async def describe(number: str) -> tuple[str, str, str]:
        async with gate:
            found = await client.get_workflow_handle(workflow_id(number)).describe()
        assert found.status is not None
        return found.status.name, found.workflow_type, found.run_id or ""

    described = await asyncio.gather(*(describe(n) for n in numbers))
    return dict(zip(numbers, described, strict=True))


def start_inputs(tag: str, count: int) -> list[InvoiceInput]:
    policy = load_policies(SHIPPED_POLICIES)["standard"]
    return [
        InvoiceInput(
            number=f"{tag}-{n}",
            customer_id=f"{tag}-c",
            customer_timezone="Europe/Berlin",
            currency="EUR",
            balance_minor=10_000 + n,
            issued_on=date(2026, 1, 5),
            due_on=date(2099, 2, 4),
            policy=policy,
        )
        for n in range(1, count + 1)
    ]


# --- the command -------------------------------------------------------------------------


async def test_an_import_starts_every_workflow_and_a_second_one_is_refused(
    dev_server: WorkflowEnvironment, ledger_url: str, tmp_path: Path
) -> None:
    settings = import_settings(tmp_path, ledger_url, dev_server)
    path, numbers = invoices_csv(tmp_path, uuid.uuid4().hex[:6].upper())
    client = dev_server.client
    engine = make_engine(settings.effective_database_url)
    try:
        async with build_worker(client, settings, engine):
            first = await asyncio.to_thread(dunwise_import, settings, path, tmp_path)
            assert first.returncode == 0, first.stderr
            assert first.stdout.splitlines()[-1] == (
                f"imported {INVOICES} invoices from {path}, refused 0 rows"
            )
            assert first.stderr == ""  # piped: no progress bar, nothing else

            started = await run_ids(client, numbers)
            assert {status for status, _, _ in started.values()} == {"RUNNING"}
            assert {kind for _, kind, _ in started.values()} == {"InvoiceWorkflow"}
            # The worker took each one up, each with its own invoice.
            gate = asyncio.Semaphore(32)

            async def state_of(number: str) -> tuple[str, int]:
                async with gate:
                    handle = client.get_workflow_handle_for(
                        InvoiceWorkflow.run, workflow_id(number)
                    )
                    # The worker may still be taking up the 300 runs: a query waits for it.
                    state = await handle.query(InvoiceWorkflow.state, rpc_timeout=QUERY_PATIENCE)
                return state.number, state.balance_minor

            states = await asyncio.gather(*(state_of(n) for n in numbers))
            assert states == [(n, (100 + i) * 100 + 25) for i, n in enumerate(numbers)]

            again = await asyncio.to_thread(dunwise_import, settings, path, tmp_path)
    finally:
        engine.dispose()
    assert again.returncode == 1
    assert f"{path}: row 2, invoice_number: {numbers[0]} is already in the ledger" in (
        again.stderr.splitlines()
    )
    assert len(again.stderr.splitlines()) == INVOICES  # one line per refused row, nothing else
    assert "imported 0 invoices" in again.stdout
    assert await run_ids(client, numbers) == started  # no run replaced, none added


# --- failures ----------------------------------------------------------------------------


async def test_a_start_that_fails_is_reported_and_the_others_start(
    dev_server: WorkflowEnvironment, tmp_path: Path
) -> None:
    settings = import_settings(tmp_path, "sqlite://", dev_server)
    tag = uuid.uuid4().hex[:6].upper()
    inputs = start_inputs(tag, 3 * START_CONCURRENCY)
    bad = inputs[5] = inputs[5].model_copy(update={"customer_id": OVERSIZED})
    done: list[int] = []

    report = await start_all(dev_server.client, settings, inputs, done=done.append)

    assert sum(done) == len(inputs)
    assert [number for number, _ in report.failed] == [bad.number]
    (_, err) = report.failed[0]
    assert isinstance(err, RPCError) and err.status == RPCStatusCode.INVALID_ARGUMENT
    assert report.not_tried == []
    good = [i.number for i in inputs if i is not bad]
    started = await run_ids(dev_server.client, good)
    assert {status for status, _, _ in started.values()} == {"RUNNING"}
    # Starting them again finds them running: no error, no second run.
    again = await start_all(dev_server.client, settings, inputs[:10])
    assert [number for number, _ in again.failed] == [bad.number]
    assert await run_ids(dev_server.client, good) == started


async def test_the_command_names_each_invoice_whose_workflow_did_not_start(
    dev_server: WorkflowEnvironment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = import_settings(tmp_path, "sqlite://", dev_server)
    tag = uuid.uuid4().hex[:6].upper()
    inputs = start_inputs(tag, 40)
    for n in (3, 17):
        inputs[n] = inputs[n].model_copy(update={"customer_id": OVERSIZED})
    path = tmp_path / "invoices.csv"

    with pytest.raises(CommandError) as refused:
        await _start_workflows(settings, path, inputs)

    assert str(refused.value) == (
        "the ledger has the invoices but their workflows could not all start (2 of 40 did "
        "not, see above); run `dunwise sync` once Temporal is reachable"
    )
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(": its workflow")[0] for line in lines] == [
        f"{path}: invoice {tag}-4",
        f"{path}: invoice {tag}-18",
    ]
    assert all("its workflow could not start (" in line for line in lines)


async def test_once_temporal_stops_answering_the_rest_are_not_tried(tmp_path: Path) -> None:
    env = await dev_server_environment()
    async with env:
        address = env.client.service_client.config.target_host
        # Few retries, so that the test does not wait out the client's default ten seconds.
        client = await Client.connect(
            address,
            data_converter=pydantic_data_converter,
            retry_config=RetryConfig(max_retries=1, max_elapsed_time_millis=500),
        )
    settings = Settings(_env_file=None, data_dir=tmp_path, temporal_address=address)
    inputs = start_inputs(uuid.uuid4().hex[:6].upper(), 5 * START_CONCURRENCY)

    report = await start_all(client, settings, inputs)

    failed = [number for number, _ in report.failed]
    assert 1 <= len(failed) <= START_CONCURRENCY
    assert all(
        isinstance(err, RPCError) and err.status == RPCStatusCode.UNAVAILABLE
        for _, err in report.failed
    )
    assert len(report.not_tried) >= len(inputs) - START_CONCURRENCY
    assert sorted(failed + report.not_tried) == sorted(i.number for i in inputs)
