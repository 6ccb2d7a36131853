"""`dunwise customer show`: the installed command in a subprocess, on a real SQLite ledger
filled in the test, with Temporal on a closed loopback port (the command needs none)."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlmodel import select

from ledger.db import make_engine, session_scope
from ledger.migrate import upgrade
from ledger.models import Customer, Invoice, Message
from tests.test_cli_errors import DUNWISE, closed_port, dunwise_env
from vocabulary import InvoiceStatus, MessageStatus


def customer_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dunwise_env(data_dir, f"127.0.0.1:{closed_port()}")
    return subprocess.run(
        [DUNWISE, "customer", "show", *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def ledger_dir(tmp_path: Path) -> Path:
    url = f"sqlite:///{tmp_path / 'dunwise.db'}"
    upgrade(url)
    engine = make_engine(url)
    with session_scope(engine) as session:
        session.add(
            Customer(
                id="acme",
                name="Acme Corp",
                email="ap@acme.example",
                phone="+14155550101",
                timezone="Europe/Berlin",
                locale="de-DE",
                sms_opt_out=True,
                phone_undeliverable="error 30005",
                owner_email="jo@northwind.example",
            )
        )
        session.add(Customer(id="quiet", name="Quiet Ltd", timezone="UTC"))
        session.flush()
        rows = [
            ("INV-1", "EUR", 120_000, InvoiceStatus.OPEN),
            ("INV-2", "EUR", 30_050, InvoiceStatus.DISPUTED),
            ("INV-3", "JPY", 5_000, InvoiceStatus.OPEN),
            ("INV-4", "EUR", 0, InvoiceStatus.CLOSED),
        ]
        for number, currency, balance, status in rows:
            session.add(
                Invoice(
                    number=number,
                    customer_id="acme",
                    currency=currency,
                    total_minor=max(balance, 1),
                    balance_minor=balance,
                    issued_on=date(2026, 11, 1),
                    due_on=date(2026, 12, 1),
                    status=status,
                    policy_name="standard",
                    policy_version=3,
                )
            )
        session.flush()
        invoice_id = session.exec(select(Invoice.id).where(Invoice.number == "INV-1")).one()
        for minute, (channel, status, reason) in enumerate(
            [("email", MessageStatus.SENT, None), ("sms", MessageStatus.SUPPRESSED, "opted out")]
        ):
            session.add(
                Message(
                    idempotency_key=f"INV-1:step:0:{channel}",
                    customer_id="acme",
                    invoice_id=invoice_id,
                    channel=channel,
                    template="courtesy",
                    status=status,
                    reason=reason,
                    created_at=datetime(2026, 11, 28, 9, minute, tzinfo=UTC),
                )
            )
    engine.dispose()
    return tmp_path


def test_a_customer_shows_contacts_consent_what_is_open_and_the_latest_messages(
    ledger_dir: Path,
) -> None:
    done = customer_cli(ledger_dir, "acme", "--json")
    assert done.returncode == 0, done.stderr
    profile = json.loads(done.stdout)
    assert profile["owner"] == "jo@northwind.example"
    assert profile["locale"] == "de-DE"
    assert profile["contacts"] == [
        {
            "channel": "email",
            "address": "ap@acme.example",
            "opted_out": False,
            "undeliverable": None,
        },
        {
            "channel": "sms",
            "address": "+14155550101",
            "opted_out": True,
            "undeliverable": "error 30005",
        },
    ]
    assert profile["open_invoices"] == 3  # the disputed one is still owed; the closed is not
    assert profile["outstanding_minor"] == {"EUR": 150_050, "JPY": 5_000}
    latest = profile["recent_messages"]
    assert [(m["channel"], m["status"], m["invoice"]) for m in latest] == [
        ("sms", "suppressed", "INV-1"),
        ("email", "sent", "INV-1"),
    ]
    assert latest[0]["reason"] == "opted out"


def test_the_plain_output_says_on_which_channels_reminders_go_out(ledger_dir: Path) -> None:
    done = customer_cli(ledger_dir, "acme")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "customer acme: Acme Corp (owner jo@northwind.example)"
    assert "reminders go out" in next(line for line in lines if line.startswith("  email"))
    assert "opted out: no reminders" in next(line for line in lines if line.startswith("  sms"))
    assert "  open: 3 invoice(s), 1500.50 EUR, 5000 JPY outstanding" in lines

    quiet = customer_cli(ledger_dir, "quiet").stdout
    assert "no address: nothing is sent" in quiet
    assert "open: 0 invoice(s), nothing outstanding" in quiet
    assert "latest messages" not in quiet


def test_an_unknown_customer_is_one_clear_line(ledger_dir: Path) -> None:
    done = customer_cli(ledger_dir, "nobody")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.strip() == "dunwise customer: customer 'nobody' does not exist"
