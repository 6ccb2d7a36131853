"""`dunwise run` with DUNWISE_ACTIVITY_PROCESSES: the workflows in run's process, the activities
in `dunwise worker --activities-only` children that run starts again when they die and that
die with it; and `dunwise worker` on its own.

Real subprocesses against a real dev server on loopback; the task queue's pollers, as the
server reports them, say which process serves which side.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from ledger.db import make_engine
from ledger.migrate import upgrade
from settings import Settings
from tests.invoice_harness import InvoiceHarness, dev_server_environment
from tests.test_cli_errors import DUNWISE, dunwise, dunwise_env
from tests.test_run_supervision import alive
from workflows.invoice import InvoiceWorkflow
from workflows.models import OneOffMessage

SECRET = "a-test-secret-key-that-is-long-enough-0123456789"
WAIT_SECONDS = 60


def activity_children(run_pid: int) -> list[int]:
    """The live `dunwise worker --activities-only` children of a process."""
    children = Path(f"/proc/{run_pid}/task/{run_pid}/children")
    found = []
    for pid in map(int, children.read_text().split()) if children.exists() else []:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"--activities-only" in command and alive(pid):
            found.append(pid)
    return found


def wait_for_children(run_pid: int, *, other_than: int | None = None) -> int:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        children = [pid for pid in activity_children(run_pid) if pid != other_than]
        if children:
            return children[0]
        time.sleep(0.1)
    raise AssertionError(f"no activity process of dunwise run (pid {run_pid}) came up")


async def poller_pids(client: Client, queue: str, kind: TaskQueueType.ValueType) -> set[int]:
    """The processes polling the task queue, by the identity Temporal workers give (pid@host)."""
    answer = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace="default", task_queue=TaskQueue(name=queue), task_queue_type=kind
        )
    )
    return {int(p.identity.split("@")[0]) for p in answer.pollers}


async def test_activities_run_in_processes_that_run_restarts_and_takes_down_with_it(
    tmp_path: Path,
) -> None:
    queue = f"split-{uuid.uuid4()}"
    settings = Settings.scratch(tmp_path, task_queue=queue)
    upgrade(settings.effective_database_url)
    engine = make_engine(settings.effective_database_url)
    env = await dev_server_environment()
    run = None
    try:
        worker_env = dunwise_env(
            tmp_path,
            env.client.service_client.config.target_host,
            queue,
            DUNWISE_DATABASE_URL=settings.effective_database_url,
            DUNWISE_SECRET_KEY=SECRET,
            DUNWISE_OUTBOX_DIR=str(settings.effective_outbox_dir),
            DUNWISE_SMS_QUIET_HOURS="",
            DUNWISE_ACTIVITY_PROCESSES="1",
        )
        log = tmp_path / "run.log"
        with log.open("a") as out:
            run = subprocess.Popen(
                [DUNWISE, "run", "--no-web"], env=worker_env, cwd=tmp_path, stdout=out, stderr=out
            )
        first = wait_for_children(run.pid)
        harness = InvoiceHarness(env=env, settings=settings, engine=engine, offset=timedelta(0))
        handle = await harness.start("P-1", due_on=date.today() + timedelta(days=60))

        async def send(request_id: str) -> int:
            """Send a one-off email; the emails in the outbox after it."""
            message = OneOffMessage(template="overdue_friendly", channels=["email"], actor="test")
            await asyncio.wait_for(
                handle.execute_update(InvoiceWorkflow.send_message, message, id=request_id),
                WAIT_SECONDS,
            )
            return len(list((settings.effective_outbox_dir / "email").glob("*.eml")))

        assert await send("message-1") == 1
        client = env.client
        assert await poller_pids(client, queue, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY) == {first}
        assert run.pid in await poller_pids(client, queue, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW)

        # A killed activity process is replaced, and the work goes on through the new one.
        subprocess.run(["kill", "-KILL", str(first)], check=True)
        second = wait_for_children(run.pid, other_than=first)
        assert await send("message-2") == 2
        assert "a worker process (pid" in log.read_text()
        assert run.pid not in await poller_pids(
            client, queue, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY
        )

        # Killed without a chance to clean up, run still leaves no activity process behind.
        run.kill()
        run.wait(timeout=10)
        deadline = time.monotonic() + 10
        while alive(second) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(second), "the activity process outlived dunwise run"
    finally:
        if run is not None and run.poll() is None:
            run.kill()
            run.wait(timeout=10)
        await env.shutdown()
        engine.dispose()


def test_a_worker_alone_needs_a_server_and_a_key_of_its_own(tmp_path: Path) -> None:
    without_server = dunwise_env(tmp_path, "")
    del without_server["DUNWISE_TEMPORAL_ADDRESS"]
    refused = dunwise(without_server, tmp_path, "worker", "--activities-only")
    assert refused.returncode == 1
    assert "set DUNWISE_TEMPORAL_ADDRESS (`dunwise run` starts an embedded one)" in refused.stderr

    with_dev_key = dunwise(dunwise_env(tmp_path, "127.0.0.1:1"), tmp_path, "worker")
    assert with_dev_key.returncode == 1
    assert "DUNWISE_SECRET_KEY is the development key" in with_dev_key.stderr

    both = dunwise(
        dunwise_env(tmp_path, "127.0.0.1:1"),
        tmp_path,
        "worker",
        "--activities-only",
        "--workflows-only",
    )
    assert both.returncode == 2
    assert "not allowed with argument" in both.stderr
