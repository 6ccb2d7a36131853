"""Sample customers, invoices and payments for `dunwise demo`, dated around today."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import NamedTuple

from ledger.csv_safety import SpreadsheetSafeWriter


class Sample(NamedTuple):
    invoice_number: str
    customer_id: str
    customer_name: str
    email: str
    phone: str
    timezone: str
    currency: str
    amount: str
    due_in_days: int
    segment: str


SAMPLES = [
    Sample("INV-1001", "acme", "Acme Corp", "ap@acme.example", "+14155550101",
           "America/Los_Angeles", "USD", "1250.00", -2, "smb"),
    Sample("INV-1002", "acme", "Acme Corp", "ap@acme.example", "+14155550101",
           "America/Los_Angeles", "USD", "310.40", 5, "smb"),
    Sample("INV-1003", "globex", "Globex GmbH", "billing@globex.example", "+4930901820",
           "Europe/Berlin", "EUR", "4800.00", 3, "mid-market"),
    Sample("INV-1004", "initech", "Initech LLC", "finance@initech.example", "+12125550199",
           "America/New_York", "USD", "999.99", 0, "smb"),
    Sample("INV-1005", "umbrella", "Umbrella Ltd", "accounts@umbrella.example", "+442079460958",
           "Europe/London", "GBP", "15000.00", 8, "mid-market"),
    Sample("INV-1006", "hooli", "Hooli Inc", "ar@hooli.example", "+16505550142",
           "America/Los_Angeles", "USD", "72.00", 10, "smb"),
    # Due the same day as INV-1004: Initech gets one reminder for both.
    Sample("INV-1007", "initech", "Initech LLC", "finance@initech.example", "+12125550199",
           "America/New_York", "USD", "450.00", 0, "smb"),
]  # fmt: skip

# (number, days from today, amount): one early payment, one partial then the rest, one on time.
PAYMENTS = [
    ("INV-1002", 3, "310.40"),
    ("INV-1003", 12, "2000.00"),
    ("INV-1003", 15, "2800.00"),
    ("INV-1006", 20, "72.00"),
]


def write(folder: Path, *, today: date) -> tuple[Path, Path]:
    """Write invoices.csv and payments.csv into folder; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    invoices = folder / "invoices.csv"
    with invoices.open("w", newline="") as handle:
        writer = SpreadsheetSafeWriter(handle)
        writer.writerow([*Sample._fields[:-2], "issued_on", "due_on", "segment"])
        for sample in SAMPLES:
            due_on = today + timedelta(days=sample.due_in_days)
            issued_on = due_on - timedelta(days=30)
            writer.writerow(
                [*sample[:-2], issued_on.isoformat(), due_on.isoformat(), sample.segment]
            )
    payments = folder / "payments.csv"
    with payments.open("w", newline="") as handle:
        writer = SpreadsheetSafeWriter(handle)
        writer.writerow(["invoice_number", "paid_on", "amount"])
        for number, paid_in, amount in PAYMENTS:
            writer.writerow([number, (today + timedelta(days=paid_in)).isoformat(), amount])
    return invoices, payments
