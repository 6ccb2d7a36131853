"""Which policy an imported row gets: named, by segment and amount, or DUNWISE_DEFAULT_POLICY."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from sqlmodel import Session, select
from temporalio.service import RPCError, RPCStatusCode

import starter
from invoices import choose_policy
from ledger.import_rows import InvoiceRow
from ledger.models import Invoice
from policies.loader import load_policies
from settings import Settings
from tests.invoice_harness import InvoiceHarness, invoice_harness
from workflows.invoice import InvoiceWorkflow

SHIPPED = Path(__file__).resolve().parent.parent / "policies"
# Only the required columns and an email: segment, locale and policy are optional.
MINIMAL_HEADER = (
    "invoice_number,customer_id,customer_name,email,timezone,currency,amount,issued_on,due_on"
)


def row(**fields: str) -> InvoiceRow:
    values = {
        "invoice_number": "INV-1",
        "customer_id": "C1",
        "customer_name": "Acme",
        "email": "ap@acme.example",
        "timezone": "UTC",
        "currency": "USD",
        "amount": "120.00",
        "issued_on": "2026-01-10",
        "due_on": "2026-02-09",
    }
    return InvoiceRow.model_validate(values | fields)


@pytest.fixture(scope="module")
def policies() -> dict:
    return load_policies(SHIPPED)


def test_a_row_without_policy_or_segment_gets_the_default(policies: dict) -> None:
    assert choose_policy(policies, row(), "standard").name == "standard"
    assert choose_policy(policies, row(), "strict").name == "strict"


def test_a_named_policy_or_a_segment_wins_over_the_default(policies: dict) -> None:
    assert choose_policy(policies, row(policy="strict"), "standard").name == "strict"
    assert choose_policy(policies, row(segment="enterprise"), "standard").name == "enterprise"
    assert choose_policy(policies, row(segment="high-risk"), "standard").name == "strict"


def test_a_default_that_is_not_loaded_is_named_in_the_error(policies: dict) -> None:
    with pytest.raises(LookupError) as refused:
        choose_policy(policies, row(), "gentle")
    assert "default policy 'gentle' (DUNWISE_DEFAULT_POLICY) is not among the policies: " in str(
        refused.value
    )
    assert str(refused.value).endswith("enterprise, standard, strict")


def test_an_amount_below_the_default_policys_minimum_names_both(policies: dict) -> None:
    with pytest.raises(LookupError) as refused:
        choose_policy(policies, row(amount="9.99"), "standard")
    message = str(refused.value)
    assert "amount 9.99 USD is below the minimum balance 10.00" in message
    assert "'standard'" in message
    assert choose_policy(policies, row(amount="10.00"), "standard").name == "standard"


def test_a_segment_no_policy_covers_keeps_its_error(policies: dict) -> None:
    with pytest.raises(
        LookupError, match=r"^no policy applies to segment retail and amount 120\.00$"
    ):
        choose_policy(policies, row(segment="retail"), "standard")
    with pytest.raises(LookupError, match=r"^no policy applies to segment smb and amount 5\.00$"):
        choose_policy(policies, row(segment="smb", amount="5.00"), "standard")


def test_an_unknown_named_policy_keeps_its_error(policies: dict) -> None:
    with pytest.raises(LookupError, match="unknown policy 'gentle'; known: enterprise, standard"):
        choose_policy(policies, row(policy="gentle"), "standard")


# --- `dunwise import`: the ledger rows and the workflows it starts --------------------------


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DUNWISE_* variable of the developer's shell reaches the settings of these tests."""
    for key in list(os.environ):
        if key.upper().startswith("DUNWISE_"):
            monkeypatch.delenv(key)


def settings_for(h: InvoiceHarness, tmp_path: Path, **more: object) -> Settings:
    """Import settings aimed at the harness: its server, task queue (worker) and ledger."""
    return Settings(
        _env_file=None,
        data_dir=tmp_path / "data",
        temporal_address=h.env.client.service_client.config.target_host,
        temporal_task_queue=h.settings.temporal_task_queue,
        database_url=h.settings.effective_database_url,
        **more,
    )


def write_csv(tmp_path: Path, header: str, *lines: str) -> Path:
    path = tmp_path / "invoices.csv"
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return path


def ledger_policies(h: InvoiceHarness) -> dict[str, str]:
    with Session(h.engine) as session:
        return {i.number: i.policy_name for i in session.exec(select(Invoice))}


async def workflow_policies(h: InvoiceHarness, *numbers: str) -> dict[str, str | None]:
    """The policy each invoice's workflow runs, or None when it has no workflow."""
    policies: dict[str, str | None] = {}
    for number in numbers:
        handle = h.env.client.get_workflow_handle_for(InvoiceWorkflow.run, f"invoice-{number}")
        try:
            policies[number] = (await handle.query(InvoiceWorkflow.state)).policy_name
        except RPCError as err:
            assert err.status == RPCStatusCode.NOT_FOUND, err
            policies[number] = None
    return policies


@pytest.mark.usefixtures("clean_environment")
async def test_import_a_minimal_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with invoice_harness(tmp_path) as h:
        path = write_csv(
            tmp_path,
            MINIMAL_HEADER,
            "M-1,C1,Acme,ap@acme.example,Europe/Berlin,EUR,120.00,2026-01-10,2026-02-09",
            "M-2,C2,Beta,ap@beta.example,UTC,USD,45,2026-01-10,2026-02-09",
        )
        status = await starter.import_invoices_file(settings_for(h, tmp_path), path, partial=False)
        out, err = capsys.readouterr()
        assert status == 0, err
        assert "imported 2 invoices" in out
        assert ledger_policies(h) == {"M-1": "standard", "M-2": "standard"}
        assert await workflow_policies(h, "M-1", "M-2") == {"M-1": "standard", "M-2": "standard"}
        description = await h.env.client.get_workflow_handle("invoice-M-1").describe()
        assert description.task_queue == h.settings.temporal_task_queue


@pytest.mark.usefixtures("clean_environment")
async def test_import_takes_the_default_policy_from_the_environment(tmp_path: Path) -> None:
    async with invoice_harness(tmp_path) as h:
        path = write_csv(
            tmp_path,
            MINIMAL_HEADER,
            "M-1,C1,Acme,ap@acme.example,UTC,USD,120.00,2026-01-10,2026-02-09",
        )
        # The installed command, configured by its environment alone (no .env in tmp_path).
        env = {
            **os.environ,
            "DUNWISE_DEFAULT_POLICY": "strict",
            "DUNWISE_DATA_DIR": str(tmp_path / "data"),
            "DUNWISE_TEMPORAL_ADDRESS": h.env.client.service_client.config.target_host,
            "DUNWISE_TEMPORAL_TASK_QUEUE": h.settings.temporal_task_queue,
            "DUNWISE_DATABASE_URL": h.settings.effective_database_url,
        }
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("dunwise")),
            "import",
            str(path),
            env=env,
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == 0, err.decode()
        assert "imported 1 invoices" in out.decode()
        assert ledger_policies(h) == {"M-1": "strict"}
        assert await workflow_policies(h, "M-1") == {"M-1": "strict"}


@pytest.mark.usefixtures("clean_environment")
async def test_import_with_a_default_policy_that_is_not_loaded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with invoice_harness(tmp_path) as h:
        path = write_csv(
            tmp_path,
            MINIMAL_HEADER,
            "M-1,C1,Acme,ap@acme.example,UTC,USD,120.00,2026-01-10,2026-02-09",
        )
        settings = settings_for(h, tmp_path, default_policy="gentle")
        status = await starter.import_invoices_file(settings, path, partial=False)
        _, err = capsys.readouterr()
        assert status == 1
        assert "row 2, policy: " in err
        assert "default policy 'gentle' (DUNWISE_DEFAULT_POLICY) is not among the policies: " in err
        assert ledger_policies(h) == {}
        assert await workflow_policies(h, "M-1") == {"M-1": None}


@pytest.mark.usefixtures("clean_environment")
async def test_import_refuses_rows_below_the_minimum_and_uncovered_segments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with invoice_harness(tmp_path) as h:
        path = write_csv(
            tmp_path,
            MINIMAL_HEADER + ",segment",
            "M-1,C1,Acme,ap@acme.example,UTC,USD,120.00,2026-01-10,2026-02-09,",
            "M-2,C2,Beta,ap@beta.example,UTC,USD,9.99,2026-01-10,2026-02-09,",
            "M-3,C3,Gamma,ap@gamma.example,UTC,USD,500,2026-01-10,2026-02-09,retail",
        )
        status = await starter.import_invoices_file(settings_for(h, tmp_path), path, partial=True)
        _, err = capsys.readouterr()
        assert status == 1
        lines = err.splitlines()
        assert f"{path}: row 3, policy: amount 9.99 USD is below the minimum balance 10.00" in err
        assert f"{path}: row 4, policy: no policy applies to segment retail and amount 500" in lines
        assert ledger_policies(h) == {"M-1": "standard"}
        assert await workflow_policies(h, "M-1", "M-2", "M-3") == {
            "M-1": "standard",
            "M-2": None,
            "M-3": None,
        }
