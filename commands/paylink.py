"""`dunwise paylink CUSTOMER_ID [INVOICE...] [--days N] [--revoke]`: a customer's pay link, or
the end of every link given out so far."""

from __future__ import annotations

import argparse

from sqlmodel import select

from commands.errors import CommandError
from ledger.db import make_engine, session_scope
from ledger.migrate import upgrade
from ledger.models import Customer, Invoice, utcnow
from paylinks import MAX_VALID_DAYS, make_pay_link
from settings import Settings


def paylink_command(settings: Settings, args: argparse.Namespace) -> None:
    if args.days is not None and not 1 <= args.days <= MAX_VALID_DAYS:
        raise CommandError(f"--days must be between 1 and {MAX_VALID_DAYS}, got {args.days}")
    upgrade(settings.effective_database_url)
    engine = make_engine(settings.effective_database_url)
    try:
        with session_scope(engine) as session:
            customer = session.get(Customer, args.customer_id)
            if customer is None:
                raise CommandError(f"no customer {args.customer_id!r} in the ledger")
            if args.revoke:
                customer.pay_links_revoked_before = utcnow()
                session.add(customer)
                print(f"every pay link of customer {customer.id} given out so far is revoked")
                return
            owned = dict(
                session.exec(
                    select(Invoice.number, Invoice.customer_id).where(
                        Invoice.number.in_(args.invoices)  # type: ignore[attr-defined]
                    )
                ).all()
            )
    finally:
        engine.dispose()
    for number in args.invoices:
        if owned.get(number) != customer.id:
            raise CommandError(f"customer {customer.id} has no invoice {number}")
    print(make_pay_link(settings, customer.id, list(dict.fromkeys(args.invoices)), args.days))
