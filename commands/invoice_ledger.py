"""The ledger's answer for an invoice whose workflow Temporal no longer has.

`dunwise invoice show` then reads the timeline the ledger kept; a payment or credit repeated
with its request id after the invoice closed finds its first recording by idempotency key.
Nothing here writes: an action the ledger cannot answer for gets None, and the caller says
why Temporal found nothing.
"""

from __future__ import annotations

import argparse

import sqlalchemy as sa
from sqlmodel import select

from commands.importing import policy_folder
from invoices import invoice_state_from_ledger
from ledger.db import make_engine, session_scope
from ledger.models import Adjustment as LedgerAdjustment
from ledger.models import Payment
from policies.errors import PolicyFileError
from policies.loader import load_policies
from settings import Settings
from workflows import keys
from workflows.models import InvoiceState


def state_from_ledger(
    settings: Settings, args: argparse.Namespace, request_id: str | None
) -> InvoiceState | None:
    """What the ledger says when Temporal no longer has the workflow: `show` reads the kept
    timeline, and a payment or credit repeated after the invoice closed finds its first
    recording. None when the ledger cannot answer for it."""
    engine = make_engine(settings.effective_database_url)
    try:
        return _ledger_answer(engine, settings, args, request_id)
    except sa.exc.SQLAlchemyError:
        return None  # no ledger here (yet): Temporal's own answer stands
    finally:
        engine.dispose()


def _ledger_answer(
    engine: sa.Engine, settings: Settings, args: argparse.Namespace, request_id: str | None
) -> InvoiceState | None:
    if request_id is None:
        note = "the workflow has ended; from the ledger:"
    else:
        recorded = {
            "pay": (Payment, keys.payment(args.number, request_id)),
            "credit": (LedgerAdjustment, keys.adjustment(args.number, request_id)),
        }.get(args.action)
        if recorded is None or not _recorded(engine, *recorded):
            return None
        note = f"request id {request_id} was recorded already; nothing new was recorded"
    try:
        policies = load_policies(policy_folder(settings))
    except PolicyFileError:
        policies = None  # the customer's zone then stands in for the policy calendar's
    state = invoice_state_from_ledger(engine, args.number, policies=policies)
    if state is not None:
        print(note)
    return state


def _recorded(engine: sa.Engine, table: type[Payment | LedgerAdjustment], key: str) -> bool:
    with session_scope(engine) as session:
        return (
            session.exec(select(table.id).where(table.idempotency_key == key)).first() is not None
        )
