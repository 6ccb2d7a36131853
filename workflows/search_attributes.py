"""Custom search attributes that make invoices listable in Temporal's visibility.

Invariants:
- `ALL` is every attribute dunwise sets; each registration path (the embedded server's
  command line, the operator service, the printed `tcld` / `temporal operator` commands)
  registers exactly these.
- Amounts (`DunwiseAmountDue`) are minor units of the invoice's currency
  (`DunwiseCurrency`): compare amounts only within one currency.
"""

from temporalio.common import SearchAttributeKey

STATUS = SearchAttributeKey.for_keyword("DunwiseStatus")
STAGE = SearchAttributeKey.for_keyword("DunwiseStage")
DAYS_PAST_DUE = SearchAttributeKey.for_int("DunwiseDaysPastDue")
CUSTOMER = SearchAttributeKey.for_keyword("DunwiseCustomer")
AMOUNT_DUE = SearchAttributeKey.for_int("DunwiseAmountDue")  # minor units
# Start of the due day in the invoice's calendar zone. Set once at start: unlike
# DunwiseDaysPastDue, which changes when the workflow wakes, it makes aging queries exact.
DUE_ON = SearchAttributeKey.for_datetime("DunwiseDueOn")
# ISO 4217 code: `DunwiseCurrency = "EUR" AND DunwiseAmountDue > 100000`.
CURRENCY = SearchAttributeKey.for_keyword("DunwiseCurrency")

# Set once a collector should look sooner (a reminder read, no payment): a task priority name.
PRIORITY = SearchAttributeKey.for_keyword("DunwisePriority")

ALL = (STATUS, STAGE, DAYS_PAST_DUE, CUSTOMER, AMOUNT_DUE, DUE_ON, CURRENCY, PRIORITY)
