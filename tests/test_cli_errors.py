"""Bad command-line input: one clear line on stderr, exit status 1, nothing sent.

Every case runs the installed `dunwise` command in a subprocess, configured only through
DUNWISE_* environment variables. Input refused before talking to Temporal is checked with
DUNWISE_TEMPORAL_ADDRESS on a closed loopback port: a command that tried to connect would
say "cannot reach Temporal" instead. Refusals that need the invoice run against a Temporal
dev server with a real worker and a real SQLite ledger.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import pytest
from sqlmodel import select

from activities.models import AdjustmentApplication
from ledger.adjustments import apply_adjustment
from ledger.db import session_scope
from ledger.models import Invoice, Payment
from tests.invoice_harness import InvoiceHarness, dev_server_environment, invoice_harness
from workflows.invoice import InvoiceWorkflow
from workflows.models import Closure, PaymentReceived

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "policies" / "standard.yaml"
DUNWISE = str(Path(sys.executable).with_name("dunwise"))  # the console script of the package
INVOICE_COLUMNS = (
    "invoice_number,customer_id,customer_name,email,timezone,currency,amount,issued_on,due_on"
)
DUE = date(2026, 4, 1)  # after the harness's pinned today, 2026-03-02


def closed_port() -> int:
    """A loopback port that nothing listens on (bound for a moment, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dunwise_env(
    data_dir: Path, temporal_address: str, task_queue: str = "dunwise", **more: str
) -> dict[str, str]:
    """The process environment without inherited DUNWISE_* settings, plus these."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DUNWISE_")}
    env.update(
        DUNWISE_DATA_DIR=str(data_dir),
        DUNWISE_TEMPORAL_ADDRESS=temporal_address,
        DUNWISE_TEMPORAL_TASK_QUEUE=task_queue,
        **more,
    )
    return env


def dunwise(env: dict[str, str], cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    # cwd holds no .env file, so the environment is the whole configuration.
    return subprocess.run(
        [DUNWISE, *argv], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def dunwise_each(
    env: dict[str, str], cwd: Path, argvs: Sequence[Sequence[str]]
) -> list[subprocess.CompletedProcess[str]]:
    """Run independent command lines side by side (each pays for an interpreter start)."""
    with ThreadPoolExecutor(max_workers=2 * (os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda argv: dunwise(env, cwd, *argv), argvs))


async def adunwise(env: dict[str, str], cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    """`dunwise` from a test that runs a worker: the event loop keeps serving while it runs."""
    process = await asyncio.create_subprocess_exec(
        DUNWISE,
        *argv,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return subprocess.CompletedProcess(
        [DUNWISE, *argv], process.returncode, out.decode(), err.decode()
    )


# --- refused before talking to Temporal ----------------------------------------------------

REFUSED_BEFORE_TEMPORAL = [
    (["pay", "A-2", "abc"], "amount 'abc' is not an amount like 1234.50 (no thousands separators)"),
    (["pay", "A-2", "NaN"], "amount 'NaN' is not an amount like 1234.50 (no thousands separators)"),
    (
        ["pay", "A-2", "Infinity"],
        "amount 'Infinity' is not an amount like 1234.50 (no thousands separators)",
    ),
    (["pay", "A-2", "1e3"], "amount '1e3' is not an amount like 1234.50 (no thousands separators)"),
    (
        ["pay", "A-2", "1,234.00"],
        "amount '1,234.00' is not an amount like 1234.50 (no thousands separators)",
    ),
    (["pay", "A-2", "-5"], "amount '-5' must be greater than 0"),
    (["pay", "A-2", "0.00"], "amount '0.00' must be greater than 0"),
    (
        ["credit", "A-2", "x", "goodwill"],
        "amount 'x' is not an amount like 1234.50 (no thousands separators)",
    ),
    (["credit", "A-2", "-5", "goodwill"], "amount '-5' must be greater than 0"),
    (["credit", "A-2", "5", "  "], "a reason is required"),
    (
        ["promise", "A-2", "2026-13-01"],
        "promise date '2026-13-01' is not a date like 2026-01-31 (YYYY-MM-DD)",
    ),
    (
        ["promise", "A-2", "01/03/2026"],
        "promise date '01/03/2026' is not a date like 2026-01-31 (YYYY-MM-DD)",
    ),
    (
        ["promise", "A-2", "20260301"],
        "promise date '20260301' is not a date like 2026-01-31 (YYYY-MM-DD)",
    ),
    (
        ["promise", "A-2", "2026-03-01", "--amount", "ten"],
        "amount 'ten' is not an amount like 1234.50 (no thousands separators)",
    ),
    (["dispute", "A-2", ""], "a reason is required"),
    (["void", "A-2", " "], "a reason is required"),
    (["write-off", "A-2", ""], "a reason is required"),
]
UNREACHABLE = ("invoice", "show", "A-2")
SIMULATE_NO_DAYS = ("simulate", "--policy", str(POLICY), "--invoices", "x.csv", "--days", "0")


@pytest.fixture(scope="module")
def no_temporal() -> str:
    return f"127.0.0.1:{closed_port()}"


@pytest.fixture(scope="module")
def without_temporal(
    tmp_path_factory: pytest.TempPathFactory, no_temporal: str
) -> dict[tuple[str, ...], subprocess.CompletedProcess[str]]:
    """Every command line of this section, run once, side by side, with Temporal unreachable."""
    cwd = tmp_path_factory.mktemp("no-temporal")
    env = dunwise_env(cwd / "data", no_temporal)
    argvs = [("invoice", *argv) for argv, _ in REFUSED_BEFORE_TEMPORAL]
    argvs += [UNREACHABLE, SIMULATE_NO_DAYS]
    return dict(zip(argvs, dunwise_each(env, cwd, argvs), strict=True))


@pytest.mark.parametrize(("argv", "reason"), REFUSED_BEFORE_TEMPORAL)
def test_bad_input_is_refused_in_one_line(
    without_temporal: dict, argv: list[str], reason: str
) -> None:
    result = without_temporal[("invoice", *argv)]
    # Not "cannot reach Temporal at ...": the input was refused before any connection.
    assert (result.returncode, result.stderr, result.stdout) == (
        1,
        f"dunwise: invoice A-2: {reason}\n",
        "",
    )


def test_an_unreachable_temporal_is_named(without_temporal: dict, no_temporal: str) -> None:
    result = without_temporal[UNREACHABLE]
    assert result.returncode == 1
    assert result.stderr == (
        f"dunwise: invoice A-2: cannot reach Temporal at {no_temporal} "
        "(is `dunwise run` running?)\n"
    )


def test_other_commands_keep_their_prefix(without_temporal: dict) -> None:
    result = without_temporal[SIMULATE_NO_DAYS]
    assert result.returncode == 1
    assert result.stderr == "dunwise simulate: --days must be at least 1\n"


# --- refused by the invoice, its workflow or the ledger ------------------------------------


def harness_env(h: InvoiceHarness, tmp_path: Path, **more: str) -> dict[str, str]:
    """The environment of a `dunwise` command talking to the harness's server and ledger."""
    return dunwise_env(
        tmp_path / "cli-data",
        h.env.client.service_client.config.target_host,
        h.settings.temporal_task_queue,
        **{"DUNWISE_DATABASE_URL": h.settings.effective_database_url, **more},
    )


def payments_of(h: InvoiceHarness, number: str) -> list[tuple[int, str, str]]:
    with session_scope(h.engine) as session:
        invoice = session.exec(select(Invoice).where(Invoice.number == number)).one()
        payments = session.exec(select(Payment).where(Payment.customer_id == invoice.customer_id))
        return [(p.amount_minor, p.currency, p.method) for p in payments]


async def test_refusals_of_the_invoice_its_workflow_and_the_ledger(tmp_path: Path) -> None:
    async with invoice_harness(tmp_path, environment=dev_server_environment) as h:
        env = harness_env(h, tmp_path)

        async def run(*argv: str) -> subprocess.CompletedProcess:
            return await adunwise(env, tmp_path, "invoice", *argv)

        # While the ERP journal cannot be written (a folder stands in its place), a settled
        # invoice's workflow keeps retrying its clearing: it runs on, paid or written off.
        journal = h.settings.effective_erp_journal
        journal.mkdir()

        await h.start("J-1", due_on=DUE, currency="JPY", amount_minor=150_000)
        paid = await h.start("K-1", due_on=DUE, currency="KWD", amount_minor=12_345)
        await h.start("K-2", due_on=DUE, currency="KWD", amount_minor=12_345)
        usd = await h.start("U-1", due_on=DUE, amount_minor=8000)
        part_paid = await h.start("U-2", due_on=DUE, amount_minor=8000)
        zero = await h.start("Z-1", due_on=DUE, amount_minor=0)
        written_off = await h.start("W-1", due_on=DUE)
        await h.start("R-1", due_on=DUE)
        voided = await h.start("V-1", due_on=DUE)
        await paid.execute_update(
            InvoiceWorkflow.record_payment, PaymentReceived(amount_minor=12_345, currency="KWD")
        )
        await part_paid.execute_update(
            InvoiceWorkflow.record_payment, PaymentReceived(amount_minor=1000, currency="USD")
        )
        await written_off.execute_update(InvoiceWorkflow.write_off, Closure(reason="bad debt"))
        # R-1 is written off in the ledger behind its workflow's back: the workflow takes the
        # credit, the ledger refuses it.
        with session_scope(h.engine) as session:
            apply_adjustment(
                session,
                AdjustmentApplication(
                    invoice_number="R-1",
                    kind="write_off",
                    amount_minor=0,
                    reason="written off in the ledger",
                    idempotency_key="R-1:by-hand",
                ),
            )

        refusals = {
            ("pay", "J-1", "12.5"): "amount 12.5 has too many decimals: JPY allows no decimals",
            ("credit", "U-1", "1.001", "typo"): (
                "amount 1.001 has too many decimals: USD allows at most 2 decimals"
            ),
            ("promise", "U-1", "2099-01-31", "--amount", "90"): (
                "promised amount 90 is more than the balance $80.00"
            ),
            # The workflow's update validators: only their reason, not "ValueError: ...".
            ("promise", "U-1", "2026-01-01"): (
                "promise date 2026-01-01 is in the past (today is 2026-03-02)"
            ),
            ("pay", "K-1", "5"): "cannot record a payment on invoice K-1: it is paid",
            ("void", "U-2", "issued in error"): (
                "invoice has payments; issue a credit instead of voiding"
            ),
            ("write-off", "Z-1", "bad debt"): "nothing to write off: the balance is zero",
            ("dispute", "W-1", "wrong amount"): "cannot dispute invoice W-1: it is written off",
            ("resume", "U-1"): "dunning is not paused: nothing to resume",
            ("pay", "U-1", "5", "--request-id", "a b"): (
                "--request-id 'a b' must be 1 to 100 letters, digits or . _ : -"
            ),
            # The ledger's refusal, without its LedgerRejected wrapping.
            ("credit", "R-1", "5", "goodwill"): "invoice R-1 is written_off: cannot apply a credit",
            ("show", "N-404"): (
                "no workflow invoice-N-404: unknown invoice number, or its workflow was never "
                "started (`dunwise sync` starts the workflows of open invoices)"
            ),
        }
        good_payment, *refused = await asyncio.gather(
            run("pay", "K-2", "12.345", "--method", "card"), *(run(*a) for a in refusals)
        )
        for argv, result in zip(refusals, refused, strict=True):
            expected = (1, f"dunwise: invoice {argv[1]}: {refusals[argv]}\n", "")
            assert (result.returncode, result.stderr, result.stdout) == expected, argv

        # The good payment went to the ledger in minor units of the invoice's currency.
        assert good_payment.returncode == 0, good_payment.stderr
        assert "invoice K-2" in good_payment.stdout
        assert payments_of(h, "K-2") == [(12_345, "KWD", "card")]

        # Nothing refused was sent.
        assert payments_of(h, "J-1") == []
        assert payments_of(h, "K-1") == [(12_345, "KWD", "manual")]
        state = await h.state(usd)
        assert (state.balance_minor, state.status, state.promise) == (8000, "open", None)
        assert [entry.event for entry in state.timeline] == ["issued"]
        assert (await h.state(zero)).status == "open"
        history = await written_off.fetch_history()
        assert not [
            e for e in history.events if e.HasField("workflow_execution_signaled_event_attributes")
        ]
        assert h.invoice("R-1").balance_minor == 0  # the ledger's own write-off, no credit

        # Once the journal can be written, a void invoice clears and its workflow completes.
        journal.rmdir()
        await voided.execute_update(InvoiceWorkflow.void, Closure(reason="issued in error"))
        assert (await voided.result()).status == "void"
        closed = await run("pay", "V-1", "5")
        assert (closed.returncode, closed.stderr) == (
            1,
            "dunwise: invoice V-1: the invoice is closed (its workflow has completed)\n",
        )


# --- simulate: each problem names its file -------------------------------------------------


def test_simulate_names_the_file_of_each_problem(tmp_path: Path) -> None:
    invoices = tmp_path / "invoices.csv"
    invoices.write_text(
        f"{INVOICE_COLUMNS}\nS-1,C1,Acme,ap@acme.example,UTC,USD,100.00,2026-01-10,2026-02-09\n"
    )
    payments = tmp_path / "payments.csv"
    payments.write_text(
        "invoice_number,paid_on,amount\n"
        "S-1,2026-02-20,abc\n"
        "\n"  # a blank line does not shift the row numbers of the rows below it
        "S-1,20/02/2026,10.001\n"
        "NOPE,2026-02-20,5\n"
    )
    bad_invoices = tmp_path / "bad-invoices.csv"
    bad_invoices.write_text(
        f"{INVOICE_COLUMNS}\nS-1,C1,Acme,ap@acme.example,UTC,USD,abc,2026-01-10,2026-02-09\n"
    )
    env = dunwise_env(tmp_path / "data", f"127.0.0.1:{closed_port()}")
    argv = ["simulate", "--policy", str(POLICY), "--payments", str(payments), "--invoices"]
    bad_payment_rows, bad_invoice_rows = dunwise_each(
        env, tmp_path, [[*argv, str(invoices)], [*argv, str(bad_invoices)]]
    )

    assert bad_payment_rows.returncode == 1
    lines = bad_payment_rows.stderr.splitlines()
    assert lines[0] == f"dunwise simulate: {payments} refused, 3 problems:"
    assert lines[1:] == [
        f"{payments}: row 2, amount: 'abc' is not an amount like 1234.50 (no thousands separators)",
        f"{payments}: row 4, paid_on: '20/02/2026' is not a date like 2026-01-31 (YYYY-MM-DD)",
        f"{payments}: row 5, invoice_number: unknown invoice NOPE",
    ]

    assert bad_invoice_rows.returncode == 1
    lines = bad_invoice_rows.stderr.splitlines()
    assert lines[0] == f"dunwise simulate: {bad_invoices} refused, 1 problem:"
    assert lines[1].startswith(f"{bad_invoices}: row 2, amount: 'abc' is not an amount")


def test_simulate_payments_file_problems(tmp_path: Path) -> None:
    invoices = tmp_path / "invoices.csv"
    invoices.write_text(
        f"{INVOICE_COLUMNS}\nS-1,C1,Acme,ap@acme.example,UTC,JPY,1000,2026-01-10,2026-02-09\n"
    )
    no_paid_on = tmp_path / "no-paid-on.csv"
    no_paid_on.write_text("invoice_number,amount\nS-1,5\n")
    bad_amounts = tmp_path / "bad-amounts.csv"
    bad_amounts.write_text("invoice_number,paid_on,amount\nS-1,2026-02-20,5.5\nS-1,2026-02-20,-5\n")
    missing = tmp_path / "nope.csv"
    env = dunwise_env(tmp_path / "data", f"127.0.0.1:{closed_port()}")
    argv = ["simulate", "--policy", str(POLICY), "--invoices", str(invoices), "--payments"]
    results = dunwise_each(
        env, tmp_path, [[*argv, str(p)] for p in (no_paid_on, bad_amounts, missing)]
    )
    assert [r.returncode for r in results] == [1, 1, 1]
    no_paid_on_lines, bad_amount_lines, missing_lines = (r.stderr.splitlines() for r in results)

    assert no_paid_on_lines[1] == f"{no_paid_on}: row 1, paid_on: column missing from the header"
    assert bad_amount_lines[1:] == [
        f"{bad_amounts}: row 2, amount: 5.5 has too many decimals: JPY allows no decimals",
        f"{bad_amounts}: row 3, amount: -5 must be greater than 0",
    ]
    assert missing_lines[1] == f"{missing}: file: cannot read nope.csv: No such file or directory"
