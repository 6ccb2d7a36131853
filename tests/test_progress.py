"""Progress bars (commands.progress): drawn on a terminal's standard error, nowhere else.

The terminal is a real pseudo-terminal (pty.openpty) given to a subprocess as its standard
error, and sometimes its standard output; pipes and files get no bar and machine-read output
(`dunwise simulate --json`) stays pure JSON. Simulations run on the real time-skipping server.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import pty
import re
import socket
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest

import simulation
from commands.progress import Bar, draws_on, progress
from policies.loader import load_policy
from simulation import simulate

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "policies" / "standard.yaml"
DUNWISE = str(Path(sys.executable).with_name("dunwise"))  # the console script of the package
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

INVOICE_COLUMNS = (
    "invoice_number,customer_id,customer_name,email,timezone,currency,amount,issued_on,due_on"
)
COUNTING = """
import sys, time
from commands.progress import progress
with progress("counting", total=3, unit="days", quiet="--quiet" in sys.argv) as bar:
    for _ in range(3):
        time.sleep(0.05)
        bar.advance()
    print("said on stderr while counting", file=sys.stderr)
print("result", bar.shown)
"""


@dataclass
class Ran:
    returncode: int
    stdout: str  # what went to the pipe ("" when standard output was the terminal too)
    terminal: str  # everything written to the terminal, escape sequences removed


def run_on_terminal(
    argv: Sequence[str], *, stdout_too: bool = False, env: dict[str, str] | None = None
) -> Ran:
    """Run `argv` with standard error (and with `stdout_too`, standard output) on a fresh
    120-column pseudo-terminal; the rest of its output through a pipe. The environment is
    this one without DUNWISE_* settings, plus `env`."""
    main, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(main, 65536)
            except OSError:  # EIO: the last writer closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    environment = {k: v for k, v in os.environ.items() if not k.upper().startswith("DUNWISE_")}
    environment.update({"TERM": "xterm-256color", **(env or {})})
    try:
        with subprocess.Popen(
            argv,
            cwd=ROOT,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=secondary if stdout_too else subprocess.PIPE,
            stderr=secondary,
        ) as process:
            os.close(secondary)
            secondary = -1
            out, _ = process.communicate(timeout=240)
        reader.join(timeout=10)
    finally:
        if secondary != -1:
            os.close(secondary)
        os.close(main)
    text = b"".join(chunks).decode("utf-8", "replace")
    return Ran(
        returncode=process.returncode,
        stdout=(out or b"").decode(),
        terminal=ANSI.sub("", text).replace("\r\n", "\n"),
    )


def python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


# -- the helper itself ---------------------------------------------------------------------


def test_no_bar_on_a_stream_that_is_not_a_terminal():
    stream = io.StringIO()
    with progress("counting", total=10, stream=stream) as bar:
        bar.advance(4)
        bar.update(total=12, description="still counting")
        bar.advance()
    assert not bar.shown
    assert type(bar) is Bar
    assert stream.getvalue() == ""
    assert not draws_on(stream)


def test_no_bar_when_quiet_even_on_a_terminal():
    main, secondary = pty.openpty()
    try:
        with open(secondary, "w", closefd=False) as terminal:
            assert draws_on(terminal)
            with progress("counting", total=2, quiet=True, stream=terminal) as bar:
                bar.advance(2)
        assert not bar.shown
    finally:
        os.close(secondary)
        os.close(main)


def test_a_closed_or_odd_stream_draws_nothing():
    closed = io.StringIO()
    closed.close()
    assert not draws_on(closed)
    assert not draws_on(object())  # type: ignore[arg-type]


def test_a_negative_total_is_refused():
    refused = pytest.raises(ValueError, match="'counting': total must not be negative, not -1")
    with refused, progress("counting", total=-1):
        pass


def test_bar_on_the_terminal_and_nothing_on_the_pipe():
    ran = run_on_terminal(python(COUNTING))
    assert ran.returncode == 0, ran.terminal
    assert ran.stdout == "result True\n"
    assert "counting" in ran.terminal
    assert "3/3 days" in ran.terminal
    # A line printed while the bar is up is shown on the terminal, not lost or mixed in.
    assert "said on stderr while counting\n" in ran.terminal


def test_quiet_bar_writes_nothing_to_the_terminal():
    ran = run_on_terminal(python(COUNTING, "--quiet"))
    assert ran.returncode == 0, ran.terminal
    assert ran.stdout == "result False\n"
    assert ran.terminal == "said on stderr while counting\n"


def test_a_dumb_terminal_gets_no_bar():
    ran = run_on_terminal(python(COUNTING), env={"TERM": "dumb"})
    assert ran.returncode == 0, ran.terminal
    assert ran.stdout == "result False\n"
    assert ran.terminal == "said on stderr while counting\n"


def test_piped_stderr_gets_no_bar():
    done = subprocess.run(python(COUNTING), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "result False\n"
    assert done.stderr == "said on stderr while counting\n"


def test_a_bar_inside_a_bar_is_a_second_line():
    nested = """
from commands.progress import progress
with progress("outer") as outer:
    with progress("inner", total=2, unit="invoices") as inner:
        inner.advance(2)
    outer.update(total=5, description="outer, now counted")
    outer.advance(5)
print(outer.shown, inner.shown)
"""
    ran = run_on_terminal(python(nested))
    assert ran.returncode == 0, ran.terminal
    assert ran.stdout == "True True\n"
    assert "2/2 invoices" in ran.terminal
    assert "outer, now counted" in ran.terminal
    assert "5/5" in ran.terminal


# -- simulate --------------------------------------------------------------------------------


def write_invoices(path: Path, count: int) -> None:
    due = date(2026, 3, 16)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(INVOICE_COLUMNS.split(","))
        for n in range(count):
            writer.writerow(
                [f"PRG-{n}", f"cust-{n}", f"Customer {n}", f"c{n}@example.com",
                 "America/New_York", "USD", f"{100 + n}.00",
                 (due - timedelta(days=30)).isoformat(), due.isoformat()]
            )  # fmt: skip


def simulate_argv(invoices: Path, days: int, *more: str) -> list[str]:
    return [DUNWISE, "simulate", "--policy", str(POLICY), "--invoices", str(invoices),
            "--days", str(days), *more]  # fmt: skip


@pytest.mark.parametrize("shard_invoices", [2, 1], ids=["one shard", "shards in runners"])
async def test_simulation_tells_every_day_once(tmp_path, monkeypatch, shard_invoices):
    invoices = tmp_path / "invoices.csv"
    write_invoices(invoices, 2)
    monkeypatch.setattr(simulation, "SHARD_INVOICES", shard_invoices)
    told: list[int] = []
    result = await simulate(
        load_policy(POLICY), invoices, tmp_path / "run", days=45, on_days=told.append
    )
    assert sum(told) == 45
    assert all(step > 0 for step in told)
    assert len(told) > 1  # told as the run goes, not once at the end
    assert len(result.final_states) == 2


def test_simulate_json_stays_pure_json_with_stderr_on_a_terminal(tmp_path):
    invoices = tmp_path / "invoices.csv"
    write_invoices(invoices, 2)
    ran = run_on_terminal(simulate_argv(invoices, 40, "--json"))
    assert ran.returncode == 0, ran.terminal
    events = [json.loads(line) for line in ran.stdout.splitlines()]
    assert events and {e["event"] for e in events} >= {"issued", "reminder"}
    assert "simulating" not in ran.terminal
    assert "days" not in ran.terminal


def test_simulate_into_a_pipe_draws_no_bar(tmp_path):
    invoices = tmp_path / "invoices.csv"
    write_invoices(invoices, 2)
    ran = run_on_terminal(simulate_argv(invoices, 20))
    assert ran.returncode == 0, ran.terminal
    assert "Summary: 2 invoices" in ran.stdout
    assert "simulating" not in ran.terminal


def test_simulate_on_a_terminal_counts_the_days(tmp_path):
    invoices = tmp_path / "invoices.csv"
    write_invoices(invoices, 2)
    ran = run_on_terminal(simulate_argv(invoices, 30), stdout_too=True)
    assert ran.returncode == 0, ran.terminal
    assert "simulating" in ran.terminal
    assert "30/30 days" in ran.terminal
    # The bar is gone before the timeline is printed: the timeline ends the output, whole.
    assert ran.terminal.rstrip().endswith(
        "Rendered messages: (not kept: give --outbox to keep them)"
    )


def test_simulate_refuses_a_bad_days_count_in_one_line(tmp_path):
    invoices = tmp_path / "invoices.csv"
    write_invoices(invoices, 1)
    ran = run_on_terminal(simulate_argv(invoices, 0))
    assert ran.returncode == 1
    assert ran.stdout == ""
    assert ran.terminal == "dunwise simulate: --days must be at least 1\n"


# -- sync --------------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sync_report_goes_to_the_pipe_untouched_by_the_spinner(tmp_path):
    env = {
        "DUNWISE_DATA_DIR": str(tmp_path / "data"),
        # An empty ledger has nothing to ask Temporal; were it asked, this port would refuse.
        "DUNWISE_TEMPORAL_ADDRESS": f"127.0.0.1:{closed_port()}",
    }
    ran = run_on_terminal([DUNWISE, "sync"], env=env)
    assert ran.returncode == 0, ran.terminal
    assert ran.stdout == (
        "0 open invoices, each with its workflow: 0 started, 0 restarted, 0 already running\n"
    )
