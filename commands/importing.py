"""`dunwise import` and `dunwise sync`: invoices into the ledger, each with its workflow."""

from __future__ import annotations

import sys
from pathlib import Path

from sqlmodel import Session, select
from temporalio.service import RPCError

from commands.errors import CommandError
from invoices import choose_policy, invoice_input, start_invoice_workflow
from ledger.db import make_engine, session_scope
from ledger.imports import InvoiceRow, import_file
from ledger.migrate import upgrade
from ledger.models import Customer, Invoice, InvoiceStatus
from policies.loader import load_policies
from policies.schema import Policy
from settings import Settings
from temporal_client import temporal
from workflows.models import InvoiceInput

SHIPPED_POLICIES = Path(__file__).parent.parent / "policies"
OPEN_STATUSES = (InvoiceStatus.OPEN, InvoiceStatus.DISPUTED, InvoiceStatus.PAUSED)


def policy_folder(settings: Settings) -> Path:
    return settings.policy_dir or SHIPPED_POLICIES


async def import_invoices_file(settings: Settings, path: Path, *, partial: bool) -> int:
    policies = load_policies(policy_folder(settings))
    upgrade(settings.effective_database_url)
    engine = make_engine(settings.effective_database_url)

    def policy_for(row: InvoiceRow) -> tuple[str, int]:
        policy = choose_policy(policies, row, settings.default_policy)
        return policy.name, policy.version

    with session_scope(engine) as session:
        report = import_file(session, path, policy_for, partial=partial)
        inputs = [_workflow_input(session, number, policies) for number in report.imported]
    for error in report.refused:
        print(f"{path}: {error}", file=sys.stderr)
    await _start_workflows(settings, inputs)
    print(f"imported {len(inputs)} invoices from {path}, refused {len(report.refused_rows)} rows")
    return 1 if report.refused else 0


async def start_open_invoices(settings: Settings) -> None:
    """Make sure every open invoice in the ledger has its workflow (safe to repeat)."""
    policies = load_policies(policy_folder(settings))
    upgrade(settings.effective_database_url)
    engine = make_engine(settings.effective_database_url)
    with session_scope(engine) as session:
        numbers = session.exec(
            select(Invoice.number).where(Invoice.status.in_(OPEN_STATUSES))  # type: ignore[attr-defined]
        ).all()
        inputs = [_workflow_input(session, number, policies) for number in numbers]
    await _start_workflows(settings, inputs)
    print(f"{len(inputs)} open invoices, each with its workflow")


async def _start_workflows(settings: Settings, inputs: list[InvoiceInput]) -> None:
    if not inputs:
        return
    try:
        async with temporal(settings) as client:
            for invoice in inputs:
                await start_invoice_workflow(client, settings, invoice)
    except (RuntimeError, RPCError) as err:
        raise CommandError(
            f"the ledger has the invoices but their workflows could not all start ({err}); "
            "run `dunwise sync` once Temporal is reachable"
        ) from err


def _workflow_input(session: Session, number: str, policies: dict[str, Policy]) -> InvoiceInput:
    invoice = session.exec(select(Invoice).where(Invoice.number == number)).one()
    customer = session.get(Customer, invoice.customer_id)
    assert customer is not None
    return invoice_input(invoice, customer.timezone, policies[invoice.policy_name])
