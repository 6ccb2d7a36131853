"""How a settled invoice ends: cleared in the ERP, receipted, closed in the ledger with its
story, and how a long history starts afresh (continue-as-new) without losing that story.

Invariants:
- Clearing is retried until the ERP takes it; a rejection keeps the invoice in clearing and
  says so on the timeline, and the retries grow apart to at most a day.
- A receipt that cannot be sent never keeps a paid invoice open.
- A paid invoice is closed and its timeline saved in one ledger transaction; the ledger's
  refusal of the timeline (it holds another run's story) is told, and the invoice closes.
- Before a new history starts, the timeline entries the ledger lacks are saved.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.erp import ErpActivities
    from activities.ledger import LedgerActivities
    from activities.messaging import MessagingActivities
    from activities.models import (
        Closing,
        ErpClearingRequest,
        ReceiptRequest,
        StatusChange,
        TimelineBatch,
    )
    from vocabulary import InvoiceStatus
    from workflows import keys
    from workflows.models import Stage
from workflows.invoice_core import (
    ERP_REJECTED_RETRY_AFTER,
    ERP_RETRY,
    HISTORY_EVENTS_BOUND,
    LEDGER_TIMEOUT,
    MESSAGE_TIMEOUT,
    SERVICE_RETRY,
    activity_reason,
)
from workflows.invoice_patches import CLOSE_IN_ONE_STEP, TIMELINE_IN_LEDGER, takes_change
from workflows.invoice_steps import InvoiceSteps

PAID_AND_CLEARED = "paid and cleared"


class InvoiceClosing(InvoiceSteps):
    """Clearing, the receipt, closing, and continue-as-new."""

    async def _close(self) -> None:
        self._set_stage(Stage.CLEARING)
        await self._clear_in_erp()
        self._record("cleared", "posted to the ERP")
        if self.s.status == InvoiceStatus.PAID:
            await self._send_receipt()
            if takes_change(CLOSE_IN_ONE_STEP):
                await self._close_in_ledger()
                return
            async with self._ledger_turn():
                await self._set_status(InvoiceStatus.CLOSED, PAID_AND_CLEARED)
        self._set_stage(Stage.CLOSED)
        self._record("closed", self.s.status)
        self._publish()
        if takes_change(TIMELINE_IN_LEDGER):
            # Temporal forgets a closed workflow after its retention period; the ledger keeps
            # the invoice's story for as long as the books are kept.
            await self._save_timeline()

    async def _clear_in_erp(self) -> None:
        while True:
            try:
                await workflow.execute_activity_method(
                    ErpActivities.clear_in_erp,
                    ErpClearingRequest(
                        invoice_number=self.invoice.number,
                        cleared_on=self._now().astimezone(self.zone).date(),
                        idempotency_key=keys.erp_clearing(self.invoice.number),
                    ),
                    start_to_close_timeout=timedelta(minutes=1),
                    retry_policy=ERP_RETRY,
                )
                return
            except ActivityError as err:
                # Rejected outright (for example a 4xx): keep the invoice open in clearing.
                self._record("erp_rejected", activity_reason(err))
                # Six hours, then twelve, ... at most a day: someone must fix the ERP side.
                rejections = self.s.timeline[-1].count
                await workflow.sleep(min(ERP_REJECTED_RETRY_AFTER * rejections, timedelta(days=1)))
                await self._continue_as_new_if_due()

    async def _send_receipt(self) -> None:
        try:
            await workflow.execute_activity_method(
                MessagingActivities.send_receipt,
                ReceiptRequest(
                    invoice_number=self.invoice.number,
                    paid_at=self._now(),
                    idempotency_key=keys.receipt(self.invoice.number),
                ),
                start_to_close_timeout=MESSAGE_TIMEOUT,
                retry_policy=SERVICE_RETRY,
            )
            self._record("receipt")
        except ActivityError as err:
            # Refused for good (say its template is gone): the money is settled all the
            # same, so the invoice closes and the timeline says what went wrong.
            self._record("receipt_failed", activity_reason(err))

    async def _close_in_ledger(self) -> None:
        """Close the paid invoice and save its timeline, the closing included, together."""
        self._record("closed", InvoiceStatus.CLOSED)
        batch = self._unsaved_timeline()
        async with self._ledger_turn():
            closed = await self._ledger(
                LedgerActivities.close_invoice,
                Closing(
                    status=StatusChange(
                        invoice_number=self.invoice.number,
                        status=InvoiceStatus.CLOSED,
                        reason=PAID_AND_CLEARED,
                    ),
                    timeline=batch,
                ),
            )
        self.s.status = closed.balance.status
        self._set_stage(Stage.CLOSED)
        if closed.timeline_refused is None:
            self.s.timeline_saved = batch.first_position + len(batch.entries)
        else:
            self._record("timeline_not_saved", closed.timeline_refused)

    # ----------------------------------------------------------------- continue-as-new

    def _history_full(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() > HISTORY_EVENTS_BOUND
        )

    async def _continue_as_new_if_due(self) -> None:
        """Start a fresh history that carries the state and timeline, once this one is long."""
        if not self._history_full():
            return
        await self._save_timeline()
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(self.invoice.model_copy(update={"progress": self.s}))

    def _unsaved_timeline(self) -> TimelineBatch:
        """The entries the ledger lacks, and the last one it has (whose count may have grown)."""
        first = max(self.s.timeline_saved - 1, 0)
        return TimelineBatch(
            invoice_number=self.invoice.number,
            first_position=first,
            entries=self.s.timeline[first:],
        )

    async def _save_timeline(self) -> None:
        try:
            await workflow.execute_activity_method(
                LedgerActivities.record_timeline,
                self._unsaved_timeline(),
                start_to_close_timeout=LEDGER_TIMEOUT,
                retry_policy=SERVICE_RETRY,
            )
        except ActivityError as err:
            # The ledger holds another story for this invoice (an earlier workflow's): keep
            # both rather than fail; this run's timeline stays in its workflow.
            self._record("timeline_not_saved", activity_reason(err))
            return
        self.s.timeline_saved = len(self.s.timeline)
