"""A worker killed (SIGKILL) in the middle of sending an email, then started again: the email
is sent once. The worker is the installed `dunwise run --no-web` in a subprocess, the server
a real dev server, the mail server aiosmtpd on loopback that holds the first message without
answering until the worker is dead (so that message was never accepted, as with any MTA)."""

from __future__ import annotations

import asyncio
import email
import subprocess
import threading
import uuid
from datetime import date, timedelta
from email import policy
from pathlib import Path

from aiosmtpd.controller import Controller
from sqlmodel import select

from ledger.db import make_engine, session_scope
from ledger.migrate import upgrade
from ledger.models import Message
from settings import Settings
from tests.invoice_harness import InvoiceHarness, dev_server_environment
from tests.test_cli_errors import DUNWISE, dunwise_env
from tests.test_run_supervision import free_port
from workflows.invoice import InvoiceWorkflow
from workflows.models import OneOffMessage

SECRET = "a-test-secret-key-that-is-long-enough-0123456789"
WAIT_SECONDS = 60


class StallingMailServer:
    """Holds the first message until `release` is set, then refuses it (421); accepts the rest."""

    def __init__(self) -> None:
        self.first_arrived = threading.Event()
        self.release = threading.Event()
        self.accepted: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if not self.first_arrived.is_set():
            self.first_arrived.set()
            await asyncio.get_running_loop().run_in_executor(None, self.release.wait)
            return "421 Service closing before the message was accepted"
        self.accepted.append(email.message_from_bytes(envelope.content, policy=policy.default))
        return "250 Message accepted"


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("a") as out:
        return subprocess.Popen(
            [DUNWISE, "run", "--no-web"], env=env, cwd=log.parent, stdout=out, stderr=out
        )


async def test_a_worker_killed_mid_send_sends_the_email_once(tmp_path: Path) -> None:
    mail = StallingMailServer()
    smtp_port = free_port()
    controller = Controller(mail, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    queue = f"killed-{uuid.uuid4()}"
    settings = Settings.scratch(tmp_path, task_queue=queue).model_copy(
        update={"email_backend": "smtp", "smtp_host": "127.0.0.1", "smtp_port": smtp_port}
    )
    upgrade(settings.effective_database_url)
    engine = make_engine(settings.effective_database_url)
    env = await dev_server_environment()
    workers: list[subprocess.Popen] = []
    try:
        address = env.client.service_client.config.target_host
        worker_env = dunwise_env(
            tmp_path,
            address,
            queue,
            DUNWISE_DATABASE_URL=settings.effective_database_url,
            DUNWISE_SECRET_KEY=SECRET,
            DUNWISE_EMAIL_BACKEND="smtp",
            DUNWISE_SMTP_HOST="127.0.0.1",
            DUNWISE_SMTP_PORT=str(smtp_port),
            DUNWISE_SMS_BACKEND="outbox",
            DUNWISE_SMS_QUIET_HOURS="",
            # The send runs in run's own process, so killing run kills it mid-send.
            DUNWISE_ACTIVITY_PROCESSES="0",
        )
        log = tmp_path / "worker.log"
        harness = InvoiceHarness(env=env, settings=settings, engine=engine, offset=timedelta(0))
        handle = await harness.start("K-1", due_on=date.today() + timedelta(days=60))
        workers.append(start_worker(worker_env, log))
        message = OneOffMessage(template="overdue_friendly", channels=["email"], actor="test")
        sending = asyncio.create_task(
            handle.execute_update(InvoiceWorkflow.send_message, message, id="one-off-1")
        )
        arrived = await asyncio.to_thread(mail.first_arrived.wait, WAIT_SECONDS)
        assert arrived, f"no message reached the mail server:\n{log.read_text()}"

        workers[0].kill()
        workers[0].wait(timeout=10)
        mail.release.set()
        with session_scope(engine) as session:
            [row] = session.exec(select(Message)).all()
            assert row.status == "sending"  # the crash left it mid-send

        workers.append(start_worker(worker_env, log))
        # Temporal retries the send once its attempt times out (the dead worker never answers).
        state = await asyncio.wait_for(sending, timeout=300)
        assert [e.event for e in state.timeline].count("message") == 1
        assert len(mail.accepted) == 1
        assert mail.accepted[0]["To"] == "ap@customer.example"
        with session_scope(engine) as session:
            rows = session.exec(select(Message)).all()
        assert [(r.template, r.status) for r in rows] == [("overdue_friendly", "sent")]
        # Nothing more goes out afterwards.
        await asyncio.sleep(1)
        assert len(mail.accepted) == 1
    finally:
        mail.release.set()
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(timeout=10)
        await env.shutdown()
        engine.dispose()
        controller.stop()
