"""What every part of the invoice workflow shares: its state, its clock, the ledger, the timeline.

Invariants:
- All state lives in `self.s` (InvoiceProgress); continue-as-new carries it whole.
- The ledger is the truth for money: every balance here comes back from a ledger activity.
- A refusal a caller should hear is `Refused` (an ApplicationError): it fails the request,
  never the workflow.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as ActivityTimeout

with workflow.unsafe.imports_passed_through():
    from activities.ledger import LedgerActivities
    from activities.models import (
        LedgerBalance,
        PlannedStep,
        StatusChange,
    )
    from policies.money import from_minor
    from policies.schedule import days_past_due
    from policies.schema import Step
    from vocabulary import TERMINAL_STATUSES, InvoiceStatus
    from workflows.models import (
        Closure,
        InvoiceInput,
        InvoiceProgress,
        InvoiceState,
        Stage,
        TimelineEntry,
    )
from workflows.invoice_visibility import InvoiceVisibility

# A ledger activity's request and result, so `_ledger` returns what its activity does.
Request = TypeVar("Request")
Result = TypeVar("Result")

LEDGER_TIMEOUT = timedelta(seconds=30)
MESSAGE_TIMEOUT = timedelta(minutes=2)
PLANNING_TIMEOUT = timedelta(seconds=30)
# A caller's request tries the ledger for this long, notes the outage, and tries again after
# a pause.
LEDGER_ATTEMPT = timedelta(seconds=10)
LEDGER_RETRY_AFTER = timedelta(seconds=30)
# Ledger and messaging retry with backoff; their business errors are non-retryable.
SERVICE_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=5))
# The ERP may be down for hours; clearing is retried until it succeeds.
ERP_RETRY = RetryPolicy(maximum_interval=timedelta(hours=1))
LATE_STEP_TOLERANCE = timedelta(minutes=5)
ERP_REJECTED_RETRY_AFTER = timedelta(hours=6)
# Continue as new well before Temporal's limits (it suggests it at a few thousand events).
HISTORY_EVENTS_BOUND = 2_000
# How many recent request ids the workflow remembers; Temporal dedupes within a run as well.
REMEMBERED_REQUESTS = 500
# Stages in which no reminder goes out until a message moves the invoice on.
PAUSING_STAGES = frozenset(
    {
        Stage.PAUSED,
        Stage.DISPUTED,
        Stage.ESCALATED,
        Stage.STOPPED,
        Stage.PAYMENT_PENDING,
        Stage.ON_PLAN,
    }
)
# Events that may repeat unchanged for as long as an invoice lives: counted, not copied.
REPEATING_EVENTS = frozenset(
    {
        "erp_rejected",
        "ledger_unavailable",
        "dispute_refused",
        "outcome_refused",
        "portal_visit",
        "invoice_viewed",
    }
)
# Where a run restarted from the ledger (`dunwise sync`) picks up, by ledger status.
STAGE_FOR_LEDGER_STATUS = {
    InvoiceStatus.DISPUTED: Stage.DISPUTED,
    InvoiceStatus.PAUSED: Stage.STOPPED,
}


class Refused(ApplicationError):
    """A request the invoice turns down: the caller hears why; the workflow goes on."""

    def __init__(self, message: str) -> None:
        super().__init__(message, type="Refused", non_retryable=True)


class InvoiceCore(InvoiceVisibility):
    """The invoice workflow's state and the helpers its lifecycle and its requests share."""

    invoice: InvoiceInput
    zone: ZoneInfo
    s: InvoiceProgress
    ledger_lock: asyncio.Lock
    timers: set[asyncio.Task[None]]  # timers still running, never cancelled

    # ----------------------------------------------------------------- queries

    @workflow.query
    def state(self) -> InvoiceState:
        s = self.s
        return InvoiceState(
            number=self.invoice.number,
            customer_id=self.invoice.customer_id,
            currency=self.invoice.currency,
            balance_minor=s.balance_minor,
            status=s.status,
            stage=s.stage,
            next_step_at=s.next_step_at,
            paused_until=s.paused_until,
            promise=s.promise,
            plan=s.plan,
            policy_name=self.invoice.policy.name,
            policy_version=self.invoice.policy.version,
            days_past_due=days_past_due(self.invoice.due_on, self._now(), self.zone),
            timezone=self.zone.key,
            timeline=list(s.timeline),
        )

    @workflow.query
    def get_timeline(self) -> list[TimelineEntry]:
        return list(self.s.timeline)

    # ----------------------------------------------------------------- internals

    def _step(self, planned: PlannedStep) -> Step:
        return self.invoice.policy.steps[planned.index]

    def _now(self) -> datetime:
        return workflow.now() - self.invoice.clock_offset

    def _money(self, amount_minor: int) -> str:
        return f"{from_minor(amount_minor, self.invoice.currency_exponent)} {self.invoice.currency}"

    def _settled(self) -> bool:
        return self.s.status in TERMINAL_STATUSES

    def _require_open(self, action: str) -> None:
        if self._settled():
            raise ValueError(self._closed_message(action))

    def _closed_message(self, action: str) -> str:
        status = self.s.status.replace("_", " ")
        return f"cannot {action} invoice {self.invoice.number}: it is {status}"

    @staticmethod
    def _require_reason(closure: Closure) -> None:
        if not closure.reason.strip():
            raise ValueError("a reason is required")

    def _pause_for(self, stage: Stage) -> None:
        if self.s.stage in (Stage.SCHEDULED, Stage.ESCALATED, Stage.STOPPED):
            self.s.stage_after_pause = self.s.stage
        self._set_stage(stage)

    def _payment_landed_or_failed(self, reference: str | None) -> None:
        """A payment on its way arrived or failed: reminders go on once none is pending."""
        if reference not in self.s.pending_payments:
            return
        self.s.pending_payments.remove(reference)
        if self.s.stage == Stage.PAYMENT_PENDING and not self.s.pending_payments:
            self._set_stage(self.s.stage_after_pause)

    def _set_stage(self, stage: Stage) -> None:
        self.s.stage = stage
        self._publish()

    def _apply_balance(self, balance: LedgerBalance) -> None:
        self.s.balance_minor = balance.balance_minor
        self.s.status = balance.status
        self._publish()

    async def _set_status(
        self,
        status: InvoiceStatus,
        reason: str | None,
        caller_waits: bool = False,
        actor: str = "system",
    ) -> None:
        balance = await self._ledger(
            LedgerActivities.set_status,
            StatusChange(
                invoice_number=self.invoice.number,
                status=status,
                reason=reason,
                actor=actor,
                request_id=caller_request_id(),
            ),
            caller_waits=caller_waits,
        )
        self.s.status = balance.status
        self._publish()

    async def _ledger(
        self,
        activity: Callable[[LedgerActivities, Request], Result],
        request: Request,
        *,
        caller_waits: bool = False,
    ) -> Result:
        """A ledger activity. For a waiting caller each try is bounded and an outage is told
        in the timeline; the request stays open until the ledger answers, so its caller may
        stop waiting and ask again with the same request id (Temporal keeps an update's first
        outcome for its id, so a refusal here could never be retried)."""
        while True:
            try:
                return await workflow.execute_activity_method(
                    activity,
                    request,
                    start_to_close_timeout=LEDGER_TIMEOUT,
                    schedule_to_close_timeout=LEDGER_ATTEMPT if caller_waits else None,
                    retry_policy=SERVICE_RETRY,
                )
            except ActivityError as err:
                if not (caller_waits and isinstance(err.cause, ActivityTimeout)):
                    # The ledger's own refusal (say a currency mismatch), for the caller.
                    raise ApplicationError(
                        activity_reason(err), type="LedgerRejected", non_retryable=True
                    ) from err
            self._record("ledger_unavailable", f"{activity.__name__} waits for the ledger")
            await workflow.sleep(LEDGER_RETRY_AFTER)

    def _record(
        self,
        event: str,
        detail: str = "",
        *,
        channel: str | None = None,
        template: str | None = None,
        amount_minor: int | None = None,
        at: datetime | None = None,
    ) -> None:
        entry = TimelineEntry(
            at=at or self._now(),
            event=event,
            detail=detail,
            channel=channel,
            template=template,
            amount_minor=amount_minor,
        )
        timeline = self.s.timeline
        last = timeline[-1] if timeline else None
        if event in REPEATING_EVENTS and last is not None and _same_event(last, entry):
            last.count += 1
            last.last_at = entry.at
            return
        timeline.append(entry)


def _same_event(a: TimelineEntry, b: TimelineEntry) -> bool:
    fields = ("event", "detail", "channel", "template", "amount_minor")
    return all(getattr(a, name) == getattr(b, name) for name in fields)


def activity_reason(err: ActivityError) -> str:
    """The activity's own message, without Temporal's wrapping."""
    cause = err.cause
    return cause.message if isinstance(cause, ApplicationError) else str(err)


def caller_request_id() -> str | None:
    """The request id of the update being handled, for the audit trail; None in the lifecycle."""
    info = workflow.current_update_info()
    return info.id if info is not None else None
