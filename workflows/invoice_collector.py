"""What a collector does to an invoice from the console or its API: notes and calls, and taking
the invoice out of automatic dunning by hand.

Invariants:
- Each is an update under the caller's request id: the same id twice is one note, one task.
- A note is written to the ledger (with its audit event) before it is on the timeline.
- Escalating by hand opens the collector task at once and holds the reminders exactly as an
  escalation step does, until a collector's outcome (resume or stop).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.models import CollectorTaskRequest, NoteRequest
    from workflows import keys
    from workflows.models import InvoiceState, ManualEscalation, Note, Stage
from workflows.invoice_payments import InvoicePayments

# Only an invoice being dunned, or one whose dunning stopped, can be escalated by hand; the
# other stages are with a collector already or wait on the payer.
ESCALATABLE_STAGES = frozenset({Stage.SCHEDULED, Stage.STOPPED})


class InvoiceCollectorRequests(InvoicePayments):
    """A collector's notes and escalations."""

    @workflow.update
    async def add_note(self, note: Note) -> InvoiceState:
        async with self._request(f"log a {note.kind} on") as request_id:
            if request_id is not None:
                await self._ledger(
                    "record_note",
                    NoteRequest(
                        invoice_number=self.invoice.number,
                        kind=note.kind.value,
                        text=note.text,
                        actor=note.actor,
                        idempotency_key=keys.note(self.invoice.number, request_id),
                    ),
                    result_type=int,
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
            await self._ledger(
                "open_collector_task",
                CollectorTaskRequest(
                    invoice_number=self.invoice.number,
                    queue=queue,
                    priority=escalation.priority,
                    due_at=self._now() + escalation.sla,
                    idempotency_key=keys.manual_escalation(self.invoice.number, request_id),
                ),
                result_type=int,
                caller_waits=True,
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
