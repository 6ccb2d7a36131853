"""`dunwise run` owns its embedded Temporal server: it stops it on a signal, restarts it when
it dies, and never uses a server it did not start.

Real subprocesses: `dunwise run` itself, its `temporal server start-dev` child, a foreign dev
server and a plain listening socket, each on free ports of 127.0.0.1. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from invoices import workflow_id
from temporal_client import installed_binary
from workflows.invoice import InvoiceWorkflow

DUNWISE = [sys.executable, "-c", "import starter; starter.main()"]
STARTUP_SECONDS = 60
STOP_SECONDS = 10  # the contract: `dunwise run` is gone this long after SIGINT or SIGTERM
INVOICES = """invoice_number,customer_id,customer_name,email,phone,timezone,currency,amount,issued_on,due_on
SUP-1,acme,Acme Corp,ap@acme.example,,Europe/Berlin,EUR,80.00,2026-01-05,2099-02-04
"""
SERVER_STARTED = r"(?:embedded Temporal server on|back on) 127\.0\.0\.1:(\d+) \(pid (\d+)\)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@dataclass
class DunwiseRun:
    """A `dunwise run` subprocess, its output in files."""

    process: subprocess.Popen
    out: Path
    err: Path

    def output(self) -> str:
        return self.out.read_text() + self.err.read_text()

    def wait_for(self, pattern: str, *, count: int = 1) -> list:
        """The first `count` matches of `pattern` in the output, once there are that many."""
        deadline = time.monotonic() + STARTUP_SECONDS
        while len(found := re.findall(pattern, self.output())) < count:
            assert self.process.poll() is None, f"dunwise run exited early:\n{self.output()}"
            assert time.monotonic() < deadline, f"no {pattern!r} in:\n{self.output()}"
            time.sleep(0.2)
        return found[:count]

    def server(self, nth: int = 1) -> tuple[int, int]:
        """Port and pid of the nth embedded server this run started."""
        self.wait_for("Ctrl-C to stop")
        port, pid = self.wait_for(SERVER_STARTED, count=nth)[-1]
        return int(port), int(pid)

    def exit_status(self, seconds: float = STOP_SECONDS) -> int:
        try:
            return self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            pytest.fail(f"dunwise run still runs after {seconds} s:\n{self.output()}")


@pytest.fixture
def dunwise_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUNWISE_")}
    env.update(
        DUNWISE_DATA_DIR=str(tmp_path / "data"),
        DUNWISE_TEMPORAL_DEV_PORT=str(free_port()),
        DUNWISE_TEMPORAL_UI_PORT=str(free_port()),
        DUNWISE_TEMPORAL_TASK_QUEUE="supervision",
        DUNWISE_WEB_PORT="0",
        DUNWISE_LOCAL_STRIPE_PORT="0",
    )
    return env


@pytest.fixture
def start_run(dunwise_env: dict[str, str], tmp_path: Path) -> Iterator:
    """Starts `dunwise run` (with a shell prefix, if given); kills what is left at the end."""
    runs: list[DunwiseRun] = []

    def start(*args: str, shell_prefix: str | None = None) -> DunwiseRun:
        n = len(runs)
        out, err = tmp_path / f"run{n}.out", tmp_path / f"run{n}.err"
        argv = [*DUNWISE, "run", *args]
        if shell_prefix:  # e.g. `trap "" INT`, as a shell does for `cmd &`
            argv = ["sh", "-c", f'{shell_prefix}; exec "$@"', "sh", *argv]
        with out.open("w") as stdout, err.open("w") as stderr:
            process = subprocess.Popen(
                argv, env=dunwise_env, cwd=tmp_path, stdout=stdout, stderr=stderr
            )
        runs.append(DunwiseRun(process, out, err))
        return runs[-1]

    yield start
    for run in runs:
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait(timeout=10)
        for _, pid in re.findall(SERVER_STARTED, run.output()):
            if alive(int(pid)):
                os.kill(int(pid), signal.SIGKILL)


def dunwise(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*DUNWISE, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


async def connect(port: int) -> Client:
    """A client of the server on `port`, once its frontend says it is healthy."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        try:
            return await Client.connect(f"127.0.0.1:{port}", data_converter=pydantic_data_converter)
        except RuntimeError:
            # A server that has just opened its port may still say "not healthy yet".
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


# --- (a) signals ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signum", "shell_prefix"),
    [
        (signal.SIGINT, None),
        (signal.SIGTERM, None),
        (signal.SIGINT, 'trap "" INT'),  # started with SIGINT ignored, as `dunwise run &` is
    ],
    ids=["SIGINT", "SIGTERM", "SIGINT-after-shell-ignored-it"],
)
def test_a_signal_stops_run_and_its_server(start_run, signum, shell_prefix) -> None:
    run = start_run(shell_prefix=shell_prefix)
    port, server_pid = run.server()
    assert alive(server_pid) and listening(port)

    run.process.send_signal(signum)

    assert run.exit_status() == 0, run.output()
    assert "stopped" in run.out.read_text()
    assert not alive(server_pid)
    assert not listening(port)


def test_a_killed_run_takes_its_server_down_with_it(start_run) -> None:
    run = start_run()
    port, server_pid = run.server()
    assert alive(server_pid) and listening(port)

    run.process.kill()  # SIGKILL: run has no chance to stop its server

    run.process.wait(timeout=STOP_SECONDS)
    deadline = time.monotonic() + STOP_SECONDS
    while alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(server_pid), "the embedded Temporal server outlived dunwise run"
    assert not listening(port)


# --- (b) a dying server ---------------------------------------------------------------------


async def test_a_killed_server_is_restarted_with_its_workflows_and_worker(
    start_run, dunwise_env, tmp_path
) -> None:
    run = start_run()
    port, first_pid = run.server()
    invoices = tmp_path / "invoices.csv"
    invoices.write_text(INVOICES)
    imported = dunwise(dunwise_env, tmp_path, "import", str(invoices))
    assert imported.returncode == 0, imported.stderr
    handle = (await connect(port)).get_workflow_handle(workflow_id("SUP-1"))
    assert (await handle.query(InvoiceWorkflow.state)).balance_minor == 8000

    os.kill(first_pid, signal.SIGKILL)

    second_port, second_pid = run.server(nth=2)
    assert "the embedded Temporal server was killed by SIGKILL; restarting it" in run.output()
    assert (second_port, run.process.poll()) == (port, None)
    assert second_pid != first_pid and not alive(first_pid)
    # The workflow survived in data/temporal.db, and a worker is back to answer its query.
    handle = (await connect(port)).get_workflow_handle(workflow_id("SUP-1"))
    assert (await handle.query(InvoiceWorkflow.state)).balance_minor == 8000
    shown = dunwise(dunwise_env, tmp_path, "invoice", "show", "SUP-1")
    assert shown.returncode == 0, shown.stderr

    run.process.send_signal(signal.SIGTERM)
    assert run.exit_status() == 0
    assert not alive(second_pid)


def test_run_stops_with_an_error_once_the_restarts_are_used_up(start_run, dunwise_env) -> None:
    dunwise_env["DUNWISE_TEMPORAL_RESTARTS"] = "1"
    run = start_run()
    port, first_pid = run.server()
    os.kill(first_pid, signal.SIGKILL)
    _, second_pid = run.server(nth=2)

    os.kill(second_pid, signal.SIGKILL)

    assert run.exit_status(seconds=30) == 1
    err = run.err.read_text()
    assert (
        "dunwise run: the embedded Temporal server was killed by SIGKILL; it was restarted " in err
    )
    assert "1 times within 5 min already, the most DUNWISE_TEMPORAL_RESTARTS allows" in err
    assert not listening(port)


# --- (c) a port that is not ours ------------------------------------------------------------


def test_a_port_held_by_another_program_is_refused(start_run, dunwise_env) -> None:
    port = int(dunwise_env["DUNWISE_TEMPORAL_DEV_PORT"])
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        run = start_run()
        assert run.exit_status(seconds=30) == 1

    assert (
        f"dunwise run: port {port} on 127.0.0.1 (DUNWISE_TEMPORAL_DEV_PORT) is already in use"
        in (run.err.read_text())
    )
    assert "--pick-port" in run.err.read_text()
    assert "dunwise worker" not in run.out.read_text()


async def test_a_foreign_temporal_server_is_neither_used_nor_worked_for(
    start_run, dunwise_env, tmp_path
) -> None:
    port = int(dunwise_env["DUNWISE_TEMPORAL_DEV_PORT"])
    foreign = subprocess.Popen(
        [installed_binary("temporal"), "server", "start-dev", "--headless", "--ip", "127.0.0.1",
         "--port", str(port), "--log-level", "error"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not listening(port):
            assert foreign.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        client = await connect(port)

        run = start_run()
        assert run.exit_status(seconds=30) == 1
        assert f"port {port} on 127.0.0.1 (DUNWISE_TEMPORAL_DEV_PORT) is already in use" in (
            run.err.read_text()
        )
        # No worker of dunwise ever polled the foreign server.
        pollers = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace="default",
                task_queue=TaskQueue(name="supervision"),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
        assert list(pollers.pollers) == []
    finally:
        foreign.kill()
        foreign.wait(timeout=10)


def test_a_second_run_on_the_same_data_folder_is_refused(start_run) -> None:
    first = start_run()
    port, _ = first.server()

    second = start_run()

    assert second.exit_status(seconds=30) == 1
    assert "another dunwise process runs the embedded Temporal server of " in second.err.read_text()
    assert f"(port {port})" in second.err.read_text()
    assert first.process.poll() is None


# --- (d) picking free ports -----------------------------------------------------------------


async def test_pick_port_runs_on_a_free_port_that_other_commands_find(
    start_run, dunwise_env, tmp_path
) -> None:
    taken = int(dunwise_env["DUNWISE_TEMPORAL_DEV_PORT"])
    taken_ui = int(dunwise_env["DUNWISE_TEMPORAL_UI_PORT"])
    with socket.socket() as holder, socket.socket() as ui_holder:
        holder.bind(("127.0.0.1", taken))
        holder.listen()
        ui_holder.bind(("127.0.0.1", taken_ui))
        ui_holder.listen()
        run = start_run("--pick-port")
        port, _ = run.server()
        out = run.out.read_text()
        assert port != taken
        assert f"port {taken} is in use, so the embedded server took free port {port}" in out
        ui_port = int(re.search(r"the UI is on port (\d+) instead", out)[1])
        assert f"Temporal UI port {taken_ui} (DUNWISE_TEMPORAL_UI_PORT) is in use" in out
        assert f"Temporal UI: http://127.0.0.1:{ui_port}" in out and ui_port != taken_ui
        await connect(port)

        # `import` and `invoice show` find the server through the data folder, not the setting.
        invoices = tmp_path / "invoices.csv"
        invoices.write_text(INVOICES)
        imported = dunwise(dunwise_env, tmp_path, "import", str(invoices))
        assert imported.returncode == 0, imported.stderr
        shown = dunwise(dunwise_env, tmp_path, "invoice", "show", "SUP-1")
        assert shown.returncode == 0, shown.stderr
        assert "balance €80.00" in shown.stdout

    run.process.send_signal(signal.SIGTERM)
    assert run.exit_status() == 0


def test_port_zero_picks_a_free_port_and_ui_can_be_off(start_run, dunwise_env) -> None:
    dunwise_env["DUNWISE_TEMPORAL_DEV_PORT"] = "0"
    dunwise_env["DUNWISE_TEMPORAL_UI"] = "false"
    run = start_run()
    port, pid = run.server()
    assert port != 0 and listening(port)
    assert "Temporal UI: off (headless)" in run.out.read_text()

    run.process.send_signal(signal.SIGINT)
    assert run.exit_status() == 0
    assert not alive(pid)
