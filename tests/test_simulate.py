"""`dunwise simulate`: the real workflows over many invoices on a time-skipping server."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

import simulation
from ledger.import_rows import ImportRejected
from ledger.imports import read_invoice_rows
from ledger.models import Invoice
from policies.loader import load_policy
from simulation import simulate
from simulation_report import format_timeline

POLICY = Path(__file__).resolve().parent.parent / "policies" / "standard.yaml"
ZONES = [
    ("America/New_York", "USD", "+12125550100"),
    ("Europe/Berlin", "EUR", "+4930901820"),
    ("Asia/Tokyo", "JPY", "+81312345678"),
    ("America/Los_Angeles", "USD", "+14155550101"),
]
COLUMNS = (
    "invoice_number,customer_id,customer_name,email,phone,timezone,currency,amount,issued_on,due_on"
)


def write_invoices(path: Path, count: int, first_due: date = date(2026, 3, 16)) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS.split(","))
        for n in range(count):
            zone, currency, phone = ZONES[n % len(ZONES)]
            due_on = first_due + timedelta(days=n % 20)
            amount = f"{1000 + n}" if currency == "JPY" else f"{100 + n}.50"
            writer.writerow(
                [f"SIM-{n:04d}", f"cust-{n % 48}", f"Customer {n % 48}", f"c{n % 48}@example.com",
                 phone, zone, currency, amount, (due_on - timedelta(days=30)).isoformat(),
                 due_on.isoformat()]
            )  # fmt: skip


def write_payments(path: Path, rows: list[tuple[str, date, str]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["invoice_number", "paid_on", "amount"])
        writer.writerows((number, day.isoformat(), amount) for number, day, amount in rows)


async def test_two_hundred_invoices_over_120_days(tmp_path):
    invoices = tmp_path / "invoices.csv"
    write_invoices(invoices, 200)
    payments = tmp_path / "payments.csv"
    # SIM-0001 (Berlin, due 03-17) pays in full on 03-20; SIM-0004 (New York) pays in part.
    write_payments(
        payments, [("SIM-0001", date(2026, 3, 20), "101.50"), ("SIM-0004", date(2026, 3, 25), "50")]
    )

    started = time.monotonic()
    result = await simulate(
        load_policy(POLICY), invoices, tmp_path / "run", payments_path=payments, days=120
    )
    print(f"simulated 200 invoices over 120 days in {time.monotonic() - started:.1f}s")

    def of(number: str) -> list[tuple[str, str, str | None, str | None]]:
        return [
            (e.at.isoformat(), e.event, e.channel, e.template)
            for e in result.events
            if e.invoice == number
        ]

    # New York, due Monday 2026-03-16, never pays.
    assert of("SIM-0000") == [
        ("2026-02-14T00:00:00-05:00", "issued", None, None),
        ("2026-03-13T09:00:00-04:00", "reminder", "email", "courtesy"),
        ("2026-03-16T09:00:00-04:00", "reminder", "email", "due_today"),
        ("2026-03-16T09:00:00-04:00", "reminder", "sms", "due_today"),
        ("2026-03-23T09:00:00-04:00", "reminder", "email", "overdue_friendly"),
        ("2026-03-30T09:00:00-04:00", "late_fee", None, None),
        ("2026-03-30T09:00:00-04:00", "reminder", "email", "overdue_firm"),
        ("2026-03-30T09:00:00-04:00", "reminder", "sms", "overdue_firm"),
        ("2026-04-15T09:00:00-04:00", "escalation", None, None),
        ("2026-04-17T09:00:00-04:00", "escalation_sla_breached", None, None),
    ]
    # Berlin, due Tuesday 2026-03-17, pays in full on Friday 03-20 at noon.
    berlin = of("SIM-0001")
    assert berlin[-4:] == [
        ("2026-03-20T12:00:00+01:00", "payment", None, None),
        ("2026-03-20T12:00:00+01:00", "cleared", None, None),
        ("2026-03-20T12:00:00+01:00", "receipt", None, None),
        ("2026-03-20T12:00:00+01:00", "closed", None, None),
    ]
    assert [t for _, e, _, t in berlin if e == "reminder"] == ["courtesy", "due_today", "due_today"]
    partial = [e for e in result.events if e.invoice == "SIM-0004" and e.event == "payment"]
    assert partial[0].detail.startswith("partial") and partial[0].amount == "$50.00"

    # Every event is timed in its customer's zone, inside the send window for messages.
    for event in result.events:
        if event.event == "reminder":
            assert (event.at.hour, event.at.minute) == (9, 0), event
            assert event.at.weekday() < 5, event
    assert sum(1 for e in result.events if e.event == "issued") == 200
    assert sum(1 for e in result.events if e.event == "escalation") == 199
    emails = list((result.outbox / "email").glob("*.eml"))
    assert len(emails) == sum(1 for e in result.events if e.channel == "email") + 1  # + receipt

    text = format_timeline(result)
    assert "Fri 2026-03-13" in text
    assert "Summary: 200 invoices" in text


async def test_a_customers_invoices_due_the_same_day_are_reminded_in_one_message(tmp_path):
    """However busy the worker (the simulated clock runs at the wall clock's pace meanwhile),
    the reminders production gathers are gathered in the simulation too."""
    invoices = tmp_path / "invoices.csv"
    with invoices.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS.split(","))
        for n in range(240):
            customer = n // 2
            writer.writerow(
                [f"PAIR-{n:03d}", f"pair-{customer}", f"Pair {customer}", f"p{customer}@example.com",
                 "+12125550100", "America/New_York", "USD", f"{200 + n}.00", "2026-03-01",
                 "2026-03-31"]
            )  # fmt: skip

    result = await simulate(load_policy(POLICY), invoices, tmp_path / "run", days=36)

    reminders = [e for e in result.events if e.event == "reminder"]
    assert len({(e.template, e.channel) for e in reminders}) >= 3
    apart = [(e.invoice, e.template, e.channel) for e in reminders if not e.detail]
    assert apart == [], "reminders sent apart from their customer's other invoice"
    for e in reminders:
        number = int(e.invoice.removeprefix("PAIR-"))
        assert e.detail == f"in one message with PAIR-{number ^ 1:03d}"


def test_cli_json_lines(tmp_path):
    """Past SHARD_INVOICES the shards run in runner processes of their own: stdout still
    holds the timeline and nothing else."""
    invoices = tmp_path / "invoices.csv"
    write_invoices(invoices, simulation.SHARD_INVOICES + 5)
    result = subprocess.run(
        [sys.executable, "-c", "import starter; starter.main()", "simulate",
         "--policy", str(POLICY), "--invoices", str(invoices), "--days", "40", "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert {"invoice", "at", "event", "channel", "template"} <= set(events[0])
    assert sum(e["event"] == "issued" for e in events) == simulation.SHARD_INVOICES + 5
    reminders = [e for e in events if e["event"] == "reminder"]
    assert {e["channel"] for e in reminders} == {"email", "sms"}
    for event in events:
        assert datetime.fromisoformat(event["at"]).utcoffset() is not None


def test_activities_in_a_process_of_their_own_give_the_same_simulation(tmp_path):
    """DUNWISE_ACTIVITY_PROCESSES=1: the same events, and stdout holds nothing else."""
    invoices, payments = tmp_path / "invoices.csv", tmp_path / "payments.csv"
    write_invoices(invoices, 12)
    write_payments(payments, [("SIM-0001", date(2026, 3, 27), "101.50")])

    def events(processes: str) -> list[str]:
        result = subprocess.run(
            [sys.executable, "-c", "import starter; starter.main()", "simulate",
             "--policy", str(POLICY), "--invoices", str(invoices), "--payments", str(payments),
             "--days", "60", "--json"],
            capture_output=True, text=True, timeout=180,
            env={**os.environ, "DUNWISE_ACTIVITY_PROCESSES": processes},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    split = events("1")
    assert all(json.loads(line)["invoice"].startswith("SIM-") for line in split)
    assert {"reminder", "payment", "receipt", "closed"} <= {json.loads(e)["event"] for e in split}
    assert split == events("0")


def test_cli_keeps_the_rendered_messages_in_the_outbox_folder(tmp_path):
    invoices = tmp_path / "invoices.csv"
    write_invoices(invoices, 2)
    outbox = tmp_path / "kept"
    command = [sys.executable, "-c", "import starter; starter.main()", "simulate",
               "--policy", str(POLICY), "--invoices", str(invoices), "--days", "40",
               "--outbox", str(outbox)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    emails = sorted((outbox / "email").glob("*.eml"))
    reminders = [line for line in result.stdout.splitlines() if " reminder " in line]
    assert emails and len(emails) <= len(reminders)
    assert "Pay" in emails[0].read_text() or "pay" in emails[0].read_text()
    assert (outbox / "sms.jsonl").read_text().count("\n") >= 1
    assert f"Rendered messages: {outbox.resolve()}" in result.stdout

    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1
    assert (
        again.stderr.strip() == f"dunwise simulate: --outbox {outbox}: give a new or empty folder"
    )


async def test_bad_payments_are_reported_by_row(tmp_path):
    invoices = tmp_path / "invoices.csv"
    write_invoices(invoices, 2)
    payments = tmp_path / "payments.csv"
    write_payments(
        payments,
        [
            ("SIM-0000", date(2026, 3, 20), "10.001"),
            ("NOPE-1", date(2026, 3, 20), "10"),
            ("SIM-0001", date(2026, 3, 20), "-5"),
        ],
    )
    with pytest.raises(ImportRejected) as rejected:
        await simulate(load_policy(POLICY), invoices, tmp_path / "run", payments_path=payments)
    messages = [str(error) for error in rejected.value.errors]
    assert messages[0].startswith("row 2, amount")
    assert messages[1] == "row 3, invoice_number: unknown invoice NOPE-1"
    assert messages[2].startswith("row 4, amount")


@pytest.mark.parametrize("shard_invoices", [4, 1], ids=["one shard", "shards in runners"])
async def test_a_payment_the_run_cannot_take_is_on_the_timeline(
    tmp_path, monkeypatch, shard_invoices
):
    """A payment dated before its invoice was issued is refused on the timeline, in the
    invoice's currency, in a runner as in this process; one after is taken."""
    invoices, payments = tmp_path / "invoices.csv", tmp_path / "payments.csv"
    write_invoices(invoices, 2)  # SIM-0000 in USD, SIM-0001 in EUR; issued 30 days before due
    write_payments(
        payments,
        [("SIM-0000", date(2026, 2, 1), "10"), ("SIM-0001", date(2026, 2, 20), "100.50")],
    )
    monkeypatch.setattr(simulation, "SHARD_INVOICES", shard_invoices)
    result = await simulate(
        load_policy(POLICY), invoices, tmp_path / "run", payments_path=payments, days=30
    )
    refused = [
        (e.invoice, e.amount, e.detail) for e in result.events if e.event == "payment_refused"
    ]
    assert refused == [("SIM-0000", "USD 10", "paid before the invoice was issued")]
    paid = [e.invoice for e in result.events if e.event == "payment"]
    assert paid == ["SIM-0001"]


async def test_a_payment_lands_at_noon_across_daylight_saving_from_today(tmp_path):
    # The server's clock runs at today's date; the simulated one is shifted back to the first
    # issue date. Pick that date so the payment (New York summer time) maps onto a winter
    # day on the server: local times must still land at noon, and clear at the same moment.
    paid_on = date(2026, 7, 15)
    today = date.today()
    winter = date(today.year + 1, 1, 15)
    issued_on = paid_on - (winter - today)
    invoices = tmp_path / "invoices.csv"
    invoices.write_text(
        f"{COLUMNS}\n"
        f"DST-1,c1,Summer Co,a@s.example,+12125550100,America/New_York,USD,100.00,"
        f"{issued_on},2026-07-31\n"
    )
    payments = tmp_path / "payments.csv"
    write_payments(payments, [("DST-1", paid_on, "100.00")])
    result = await simulate(
        load_policy(POLICY),
        invoices,
        tmp_path / "run",
        payments_path=payments,
        days=(paid_on - issued_on).days + 2,
    )
    noon = "2026-07-15T12:00:00-04:00"
    settled = [(e.at.isoformat(), e.event) for e in result.events][-4:]
    assert settled == [(noon, "payment"), (noon, "cleared"), (noon, "receipt"), (noon, "closed")]


async def test_shards_of_customers_give_the_events_one_server_gives(tmp_path, monkeypatch):
    """Split by customer over several time-skipping servers, the run is the same: a customer's
    invoices (gathered by its coordinator) and payments stay on one server."""
    invoices = tmp_path / "invoices.csv"
    with invoices.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS.split(","))
        for n in range(12):  # six customers of two invoices due the same day: one message
            customer = n // 2
            zone, currency, phone = ZONES[customer % len(ZONES)]
            due_on = date(2026, 3, 16) + timedelta(days=customer)
            writer.writerow(
                [f"SIM-{n:04d}", f"cust-{customer}", f"Customer {customer}",
                 f"c{customer}@example.com", phone, zone, currency, f"{1000 + n}",
                 (due_on - timedelta(days=30)).isoformat(), due_on.isoformat()]
            )  # fmt: skip
    payments = tmp_path / "payments.csv"
    write_payments(payments, [("SIM-0005", date(2026, 3, 20), "1005")])
    policy = load_policy(POLICY)

    def run(folder: str, keep_messages: bool = True):
        return simulate(
            policy,
            invoices,
            tmp_path / folder,
            payments_path=payments,
            days=40,
            keep_messages=keep_messages,
        )

    whole = await run("whole")
    monkeypatch.setattr(simulation, "SHARD_INVOICES", 4)
    sharded = await run("sharded")
    unkept = await run("unkept", keep_messages=False)

    def seen(result):
        return [(e.invoice, e.at, e.event, e.channel, e.template, e.detail) for e in result.events]

    def written(result):
        emails = list((result.outbox / "email").glob("*.eml"))
        sms = result.outbox / "sms.jsonl"
        return len(emails), len(sms.read_text().splitlines()) if sms.exists() else 0

    assert seen(sharded) == seen(whole) == seen(unkept)
    # Runners that keep no messages write none; kept, a sharded run writes what one does.
    assert written(unkept) == (0, 0)
    assert sum(written(sharded)) == sum(written(whole)) > 0
    assert [s.number for s in sharded.final_states] == [s.number for s in whole.final_states]
    assert {"payment", "closed", "reminder"} <= {e.event for e in sharded.events}
    gathered = [e for e in sharded.events if e.detail.startswith("in one message with")]
    assert len(gathered) >= 10


def test_shards_keep_each_customer_whole(tmp_path, monkeypatch):
    invoices = tmp_path / "invoices.csv"
    write_invoices(invoices, 10)
    rows = {row.invoice_number: row for row in read_invoice_rows(invoices)}
    customers = ["a", "a", "a", "a", "b", "c", "c", "d", "e", "e"]
    actions = [
        (datetime(2026, 3, 1, tzinfo=UTC), 0, Invoice(number=number, customer_id=customer))
        for number, customer in zip(rows, customers, strict=True)
    ]
    for number, customer in zip(rows, customers, strict=True):
        rows[number] = rows[number].model_copy(update={"customer_id": customer})
    monkeypatch.setattr(simulation, "SHARD_INVOICES", 3)

    shards = simulation._shards(actions, rows)

    owners = [[action[2].customer_id for action in shard] for shard in shards]
    # "a" alone outgrows a shard and gets its own; the others fill shards of at most three.
    assert owners == [["a", "a", "a", "a"], ["b", "c", "c"], ["d", "e", "e"]]


def _children(pid: int) -> list[int]:
    """Started by any of the process's threads (the core starts the server from its own)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(FileNotFoundError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_killed_simulation_leaves_no_runner_or_server_behind(tmp_path):
    """SIGKILL on `dunwise simulate` while runners play their shards: each runner and its
    time-skipping server go with it."""
    invoices = tmp_path / "invoices.csv"
    write_invoices(invoices, simulation.SHARD_INVOICES + 5)
    process = subprocess.Popen(
        [sys.executable, "-c", "import starter; starter.main()", "simulate",
         "--policy", str(POLICY), "--invoices", str(invoices), "--days", "120", "--json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        servers: list[int] = []
        while not servers and time.monotonic() < deadline:
            runners = [pid for pid in _children(process.pid) if b"spawn_main" in
                       Path(f"/proc/{pid}/cmdline").read_bytes()]  # fmt: skip
            servers = [server for runner in runners for server in _children(runner)]
            time.sleep(0.1)
        assert servers, "no runner started a time-skipping server"
        time.sleep(5)  # well into the shards: workflows and activities under way
    finally:
        process.kill()
        process.wait()
    gone_by = time.monotonic() + 10
    while any(map(_running, runners + servers)) and time.monotonic() < gone_by:
        time.sleep(0.1)
    assert not [pid for pid in runners + servers if _running(pid)]


async def test_a_shard_that_cannot_be_played_is_named(tmp_path, monkeypatch):
    """A runner's failure ends the run with the shard, its invoices and the cause."""
    invoices = tmp_path / "invoices.csv"
    write_invoices(invoices, 12)
    monkeypatch.setattr(simulation, "SHARD_INVOICES", 4)  # four customers a shard: 3 shards
    # The second shard's copy of the ledger goes where a folder already is.
    (tmp_path / "run" / "shards" / "1.db").mkdir(parents=True)
    with pytest.raises(simulation.ShardFailed) as failed:
        await simulate(load_policy(POLICY), invoices, tmp_path / "run", days=10)
    assert str(failed.value).startswith("shard 2 of 3 (")
    assert "could not be played: OperationalError: unable to open database file" in str(
        failed.value
    )
    assert failed.value.__cause__ is not None
