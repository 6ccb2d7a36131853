"""Where an invoice stands, told to Temporal's visibility as typed search attributes.

Invariants:
- Only attributes whose value differs from what the run's visibility holds are upserted;
  a run from before that change upserts the five it always did (its history says so).
- `workflow.info().typed_search_attributes` holds the start attributes and every upsert
  since, the same in a replay, so the comparison is deterministic.
- A settled invoice is shown in the clearing stage it is bound for from the moment it
  settles, so the payment that settles it and the clearing that follows make one upsert.
"""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from policies.schedule import days_past_due
    from workflows import search_attributes as sa
    from workflows.models import InvoiceInput, InvoiceProgress, Stage
from workflows.invoice_patches import PUBLISH_CHANGES_ONLY, SETTLED_SHOWN_CLEARING, takes_change

# Where a settled invoice stands once its workflow gets to it.
SETTLED_STAGES = (Stage.CLEARING, Stage.CLOSED)


class InvoiceVisibility:
    """The invoice workflow's `_publish`; `InvoiceCore` gives it the state and the clock."""

    invoice: InvoiceInput
    zone: ZoneInfo
    s: InvoiceProgress

    def _now(self) -> datetime:
        raise NotImplementedError("InvoiceCore._now")

    def _settled(self) -> bool:
        raise NotImplementedError("InvoiceCore._settled")

    def _publish(self) -> None:
        """Tell Temporal's visibility where the invoice stands, upserting only the attributes
        whose value differs from what the run's visibility holds: `workflow.info()` keeps its
        start attributes (which the server carries over continue-as-new) and every upsert
        since, the same in a replay."""
        s = self.s
        changes_only = takes_change(PUBLISH_CHANGES_ONLY)
        stage = Stage.CLEARING if changes_only and self._bound_for_clearing() else s.stage
        values = [
            sa.STATUS.value_set(s.status),
            sa.STAGE.value_set(stage.value),
            sa.DAYS_PAST_DUE.value_set(days_past_due(self.invoice.due_on, self._now(), self.zone)),
            sa.CUSTOMER.value_set(self.invoice.customer_id),
            sa.AMOUNT_DUE.value_set(s.balance_minor),
        ]
        if not changes_only:
            workflow.upsert_search_attributes(values)
            return
        # Also those a run started before them lacks (currency, due day).
        values += [
            sa.CURRENCY.value_set(self.invoice.currency),
            sa.DUE_ON.value_set(datetime.combine(self.invoice.due_on, time(0), self.zone)),
        ]
        if self.s.raised_priority is not None:
            values.append(sa.PRIORITY.value_set(self.s.raised_priority))
        published = workflow.info().typed_search_attributes
        changed = [value for value in values if published.get(value.key) != value.value]
        if changed:
            workflow.upsert_search_attributes(changed)

    def _bound_for_clearing(self) -> bool:
        """Settled, and not yet in the stages its workflow moves a settled invoice through."""
        return (
            self._settled()
            and self.s.stage not in SETTLED_STAGES
            and takes_change(SETTLED_SHOWN_CLEARING)
        )
