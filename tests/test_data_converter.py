"""The shared payload converter: one per process, and the wire format of the SDK's own."""

from __future__ import annotations

from datetime import UTC, datetime

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import WorkflowSerializationContext

from data_converter import DATA_CONVERTER, SharedPydanticPayloadConverter
from ledger.requests import TimelineEntry
from workflows.models import PaymentReceived

PAYMENT = PaymentReceived(amount_minor=12_550, currency="EUR", method="card", reference="ch_1")


def test_every_instance_is_the_one_built_first() -> None:
    context = WorkflowSerializationContext(namespace="default", workflow_id="INV-1")
    assert SharedPydanticPayloadConverter() is SharedPydanticPayloadConverter()
    assert DATA_CONVERTER.with_context(context) is DATA_CONVERTER


async def test_payloads_read_back_with_the_sdks_pydantic_converter_and_the_other_way() -> None:
    entry = TimelineEntry(at=datetime(2026, 12, 1, 9, 30, tzinfo=UTC), event="paid", amount_minor=7)
    ours = await DATA_CONVERTER.encode([PAYMENT, entry])
    assert await pydantic_data_converter.decode(ours, [PaymentReceived, TimelineEntry]) == [
        PAYMENT,
        entry,
    ]
    theirs = await pydantic_data_converter.encode([PAYMENT])
    assert await DATA_CONVERTER.decode(theirs, [PaymentReceived]) == [PAYMENT]
    assert ours[0].data == theirs[0].data
