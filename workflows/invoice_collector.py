"""What a collector does to an invoice from the console or its API: notes and calls, and taking
the invoice out of automatic dunning by hand.

Invariants:
- Each is an update under the caller's request id: the same id twice is one note, one task.
- A note is written to the ledger (with its audit event) before it is on the timeline.
- Escalating by hand opens the collector task at once and holds the reminders exactly as an
  escalation step does, until a collector's outcome (resume or stop). Its SLA is watched by
  the workflow's own timer: past it, the task moves to the supervisor queue.
- A one-off message goes out at once on the channels asked for, never grouped with other
  reminders, and also while dunning waits (a promise, a plan, a dispute).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.ledger import LedgerActivities
    from activities.models import (
        CollectorTaskRequest,
        NoteRequest,
        ReminderRequest,
        TaskBreach,
    )
    from workflows import keys
    from workflows.models import (
        InvoiceState,
        ManualEscalation,
        Note,
        OneOffMessage,
        SlaWatch,
        Stage,
    )
from workflows.invoice_core import (
    activity_reason,
)
from workflows.invoice_patches import MANUAL_ESCALATION_SLA, takes_change
from workflows.invoice_payments import InvoicePayments

# Only an invoice being dunned, or one whose dunning stopped, can be escalated by hand; the
# other stages are with a collector already or wait on the payer.
ESCALATABLE_STAGES = frozenset({Stage.SCHEDULED, Stage.STOPPED})
# The step index one-off messages are filed under in the outbox: no policy step has it.
ONE_OFF_STEP = -1


class InvoiceCollectorRequests(InvoicePayments):
    """A collector's notes and escalations."""

    @workflow.update
    async def add_note(self, note: Note) -> InvoiceState:
        async with self._request(f"log a {note.kind} on") as request_id:
            if request_id is not None:
                await self._ledger(
                    LedgerActivities.record_note,
                    NoteRequest(
                        invoice_number=self.invoice.number,
                        kind=note.kind.value,
                        text=note.text,
                        actor=note.actor,
                        idempotency_key=keys.note(self.invoice.number, request_id),
                    ),
                    caller_waits=True,
                )
                self._record(note.kind.value, note.text)
        return self.state()

    @add_note.validator
    def _validate_note(self, note: Note) -> None:
        if self._repeated_request():
            return
        self._require_open(f"log a {note.kind} on")
        if not note.text.strip():
            raise ValueError(f"a {note.kind} needs some text")

    @workflow.update
    async def escalate(self, escalation: ManualEscalation) -> InvoiceState:
        async with self._request("escalate") as request_id:
            if request_id is None:
                return self.state()
            queue = escalation.queue or self._policy_queue()
            task_key = keys.manual_escalation(self.invoice.number, request_id)
            due_at = self._now() + escalation.sla
            await self._ledger(
                LedgerActivities.open_collector_task,
                CollectorTaskRequest(
                    invoice_number=self.invoice.number,
                    queue=queue,
                    priority=escalation.priority,
                    due_at=due_at,
                    idempotency_key=task_key,
                ),
                caller_waits=True,
            )
            if takes_change(MANUAL_ESCALATION_SLA):
                self.s.sla_watch = SlaWatch(
                    task_key=task_key, due_at=due_at, supervisor_queue=self._breach_queue(queue)
                )
            self._pause_for(Stage.ESCALATED)
            detail = f"by hand: queue {queue}, priority {escalation.priority}"
            self._record("escalation", detail + (f": {escalation.note}" if escalation.note else ""))
        return self.state()

    @escalate.validator
    def _validate_escalation(self, escalation: ManualEscalation) -> None:
        if self._repeated_request():
            return
        self._require_open("escalate")
        if self.s.stage not in ESCALATABLE_STAGES:
            raise ValueError(
                f"invoice {self.invoice.number} is {self.s.stage.value.replace('_', ' ')}: "
                "it is with a collector or waits on the payer already"
            )
        if not timedelta(0) < escalation.sla <= timedelta(days=3650):
            raise ValueError("the SLA must be more than 0 and at most 3650 days")

    def _breach_queue(self, queue: str) -> str:
        """Where a task of `queue` goes past its SLA: as the policy's step says, or its own."""
        for step in self.invoice.policy.steps:
            if step.escalate is not None and step.escalate.queue == queue:
                return step.escalate.breach_queue
        return f"{queue}-supervisor"

    async def _watch_sla(self) -> None:
        """While escalated by hand: past the SLA, the task moves to the supervisor queue."""
        watch = self.s.sla_watch
        assert watch is not None
        try:
            await workflow.wait_condition(
                lambda: (
                    self.s.stage != Stage.ESCALATED
                    or self._settled()
                    or self.s.sla_watch is not watch  # escalated by hand again
                    or self._history_full()
                ),
                timeout=max(watch.due_at - self._now(), timedelta(0)),
            )
            if self.s.sla_watch is watch and (self.s.stage != Stage.ESCALATED or self._settled()):
                self.s.sla_watch = None
            return
        except TimeoutError:
            pass
        self.s.sla_watch = None
        self._record("escalation_sla_breached", "no collector outcome within the SLA")
        async with self._ledger_turn():
            await self._ledger(
                LedgerActivities.breach_collector_task,
                TaskBreach(
                    task_key=watch.task_key,
                    supervisor_queue=watch.supervisor_queue,
                    at=watch.due_at,
                ),
            )

    @workflow.update
    async def send_message(self, message: OneOffMessage) -> InvoiceState:
        async with self._request("send a message about") as request_id:
            if request_id is None:
                return self.state()
            try:
                outcome = await self._send(
                    ReminderRequest(
                        invoice_number=self.invoice.number,
                        template=message.template,
                        channels=list(message.channels),
                        step_index=ONE_OFF_STEP,
                        scheduled_for=self._now(),
                        idempotency_key=keys.one_off_message(self.invoice.number, request_id),
                        one_off=True,
                    )
                )
            except ActivityError as err:
                self._record("message_failed", activity_reason(err), template=message.template)
                return self.state()
            self._record_outcome("message", outcome, message.template, f"by {message.actor}")
        return self.state()

    @send_message.validator
    def _validate_message(self, message: OneOffMessage) -> None:
        if self._repeated_request():
            return
        self._require_open("send a message about")
