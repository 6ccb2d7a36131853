"""Custom search attributes that make invoices listable in Temporal's visibility."""

from temporalio.common import SearchAttributeKey

STATUS = SearchAttributeKey.for_keyword("DunwiseStatus")
STAGE = SearchAttributeKey.for_keyword("DunwiseStage")
DAYS_PAST_DUE = SearchAttributeKey.for_int("DunwiseDaysPastDue")
CUSTOMER = SearchAttributeKey.for_keyword("DunwiseCustomer")
AMOUNT_DUE = SearchAttributeKey.for_int("DunwiseAmountDue")  # minor units

ALL = (STATUS, STAGE, DAYS_PAST_DUE, CUSTOMER, AMOUNT_DUE)
