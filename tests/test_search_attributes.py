"""Search attributes: what invoices publish, how they are listed, and how they are registered.

- An invoice upserts only attributes whose value changed, checked on its history: every
  upsert carries values the run's visibility did not hold yet (start attributes, then each
  upsert), where saved histories without the `publish-changes-only` patch repeat unchanged ones.
- Invoices are listed by `DunwiseCurrency` on the dev server `dunwise run` embeds.
- Registration: added through the operator service (only what a namespace lacks), or, for
  a client with an API key (Temporal Cloud), not tried at all: the commands that do it come
  back instead. Every server here is on loopback.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr
from temporalio import workflow
from temporalio.api.enums.v1 import EventType, IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
    RemoveSearchAttributesRequest,
)
from temporalio.client import Client, WorkflowHistory
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import decode_typed_search_attributes
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from embedded_temporal import EmbeddedServer
from invoices import invoice_input, start_search_attributes
from ledger.db import session_scope
from ledger.models import Customer
from policies.loader import load_policy
from settings import Settings
from temporal_client import (
    installed_binary,
    register_search_attributes,
    registration_commands,
    search_attribute_commands,
    time_skipping_environment,
)
from tests.invoice_harness import (
    HISTORIES,
    POLICIES,
    dev_server_environment,
    invoice_harness,
    ledger_invoice,
    local,
)
from workflows import search_attributes as sa
from workflows.invoice import InvoiceWorkflow
from workflows.invoice_patches import BUNDLES, PUBLISH_CHANGES_ONLY
from workflows.models import PaymentReceived, PromiseToPay

DUE = date(2026, 3, 16)
STANDARD = load_policy(POLICIES / "standard.yaml")
SECRET = "tmprl-secret-api-key-value"
UPSERT = EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
STARTED = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
CHANGE_VERSION = "TemporalChangeVersion"
TASK_FAILED = EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
PUBLISHING_MARKERS = (PUBLISH_CHANGES_ONLY, *BUNDLES)


# ----------------------------------------------------------------- history helpers


def upserts(history: WorkflowHistory) -> list[dict[str, object]]:
    """dunwise's upserts in the history, as {name: value}. The SDK's own upserts of
    TemporalChangeVersion (one per patch a run first meets) are left out."""
    found = []
    for event in history.events:
        if event.event_type != UPSERT:
            continue
        attributes = event.upsert_workflow_search_attributes_event_attributes.search_attributes
        values = {
            pair.key.name: pair.value
            for pair in decode_typed_search_attributes(attributes)
            if pair.key.name != CHANGE_VERSION
        }
        if values or CHANGE_VERSION not in attributes.indexed_fields:
            found.append(values)
    return found


def repeated_values(history: WorkflowHistory) -> list[tuple[int, str]]:
    """(upsert number, attribute) for every value an upsert set that visibility held already."""
    [started] = [e for e in history.events if e.event_type == STARTED]
    held = {
        pair.key.name: pair.value
        for pair in decode_typed_search_attributes(
            started.workflow_execution_started_event_attributes.search_attributes
        )
    }
    repeated = []
    for number, values in enumerate(upserts(history)):
        repeated += [(number, name) for name, value in values.items() if held.get(name) == value]
        held.update(values)
    return repeated


def has_publish_patch(history: WorkflowHistory) -> bool:
    """The history holds the marker of the patch that upserts only what changed, or the one
    that stands for every change up to it."""
    return any(
        e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
        and any(marker.encode() in e.SerializeToString() for marker in PUBLISHING_MARKERS)
        for e in history.events
    )


def change_version_upserts(history: WorkflowHistory) -> int:
    """How many upserts of TemporalChangeVersion (one per patch marker) the run made."""
    return sum(
        CHANGE_VERSION
        in e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
        for e in history.events
        if e.event_type == UPSERT
    )


def names(keys: Iterable[SearchAttributeKey]) -> set[str]:
    return {key.name for key in keys}


# ----------------------------------------------------------------- only what changed


def test_earlier_code_upserted_unchanged_values():
    """Saved histories without the patch upsert every attribute each time: what the patched
    workflow leaves out. They replay on it all the same (test_replay_histories)."""
    histories = [
        WorkflowHistory.from_json(f"invoice-{path.stem}", path.read_text())
        for path in sorted(HISTORIES.glob("*.json"))
    ]
    earlier = [history for history in histories if not has_publish_patch(history)]
    if not earlier:
        pytest.skip("every saved history has the patch")
    assert sum(len(repeated_values(history)) for history in earlier) > 100
    for history in histories:
        if has_publish_patch(history):
            assert repeated_values(history) == [], history.workflow_id


async def test_an_invoice_upserts_only_what_changed(tmp_path: Path):
    async with invoice_harness(tmp_path) as h:
        handle = await h.start("SA-1", due_on=DUE, amount_minor=100_000)
        await h.advance_to(local(date(2026, 3, 10), 12))
        quiet = await handle.fetch_history()
        # Started with the attributes its first publish would set: nothing to upsert.
        assert upserts(quiet) == []

        await h.advance_to(local(date(2026, 3, 17), 12))  # courtesy and due-day reminders
        await handle.execute_update(
            InvoiceWorkflow.record_payment,
            PaymentReceived(amount_minor=40_000, currency="USD", reason="one line disputed"),
        )
        await handle.execute_update(
            InvoiceWorkflow.promise_to_pay, PromiseToPay(pay_by=date(2026, 3, 25))
        )
        await h.advance_to(local(date(2026, 3, 20), 12))
        await handle.execute_update(
            InvoiceWorkflow.record_payment, PaymentReceived(amount_minor=60_000, currency="USD")
        )
        final = await handle.result()
        assert (final.status, final.stage, final.balance_minor) == ("closed", "closed", 0)

        history = await handle.fetch_history()
        changes = upserts(history)
        assert changes, "the invoice's changes were published"
        assert repeated_values(history) == []
        assert all(values for values in changes), "no empty upsert"
        # Customer, currency and due day never change: set at start, never upserted.
        assert not {"DunwiseCustomer", "DunwiseCurrency", "DunwiseDueOn"} & {
            name for values in changes for name in values
        }
        # Reminders before the due day changed nothing: the partial payment came first.
        assert changes[0]["DunwiseAmountDue"] == 60_000
        # The payment that settled it and the clearing it starts: one upsert. Then closing.
        settled, closed = changes[-2:]
        assert settled | {"DunwiseDaysPastDue": 4} == {
            "DunwiseStatus": "paid",
            "DunwiseStage": "clearing",
            "DunwiseAmountDue": 0,
            "DunwiseDaysPastDue": 4,
        }
        assert closed == {"DunwiseStatus": "closed", "DunwiseStage": "closed"}
        assert has_publish_patch(history)
        # Reminders, a payment, a promise, closing: one patch marker stands for every change.
        assert change_version_upserts(history) == 1

        published = (await handle.describe()).typed_search_attributes
        assert published.get(sa.STATUS) == "closed"
        assert published.get(sa.STAGE) == "closed"
        assert published.get(sa.AMOUNT_DUE) == 0
        assert published.get(sa.CURRENCY) == "USD"
        assert published.get(sa.CUSTOMER) == "cust-SA-1"
        assert published.get(sa.DAYS_PAST_DUE) == 4
        await h.assert_replays(handle)


async def test_a_run_started_without_currency_publishes_it_once(tmp_path: Path):
    """A workflow started before DunwiseCurrency existed gets it (and only it) on its first
    publish, once."""
    policy = STANDARD
    invoice = ledger_invoice(
        "SA-OLD", "cust-SA-OLD", policy, due_on=DUE, amount_minor=5_000, currency="EUR"
    )
    async with invoice_harness(tmp_path) as h:
        with session_scope(h.engine) as session:
            session.add(
                Customer(
                    id="cust-SA-OLD",
                    name="Customer of SA-OLD",
                    email="ap@customer.example",
                    timezone="America/New_York",
                )
            )
            session.add(invoice)
        zone = "America/New_York"
        start = invoice_input(h.invoice("SA-OLD"), zone, policy, clock_offset=h.offset)
        now = await h.env.get_current_time()
        older = [pair for pair in start_search_attributes(start, now) if pair.key != sa.CURRENCY]
        handle = await h.env.client.start_workflow(
            InvoiceWorkflow.run,
            start,
            id="invoice-SA-OLD",
            task_queue=h.settings.temporal_task_queue,
            search_attributes=TypedSearchAttributes(older),
        )
        await h.advance_to(local(date(2026, 3, 14), 12))  # the courtesy reminder went out
        history = await handle.fetch_history()
        assert upserts(history)[0] == {"DunwiseCurrency": "EUR"}
        assert repeated_values(history) == []
        assert (await handle.describe()).typed_search_attributes.get(sa.CURRENCY) == "EUR"


async def without_currency() -> WorkflowEnvironment:
    """A dev server whose namespace was set up before DunwiseCurrency existed."""
    return await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        search_attributes=[key for key in sa.ALL if key != sa.CURRENCY],
        dev_server_existing_path=installed_binary("temporal"),
        dev_server_log_level="error",
        ui=False,
    )


async def test_a_namespace_lacking_the_currency_holds_invoices_until_it_is_added(tmp_path: Path):
    """Upgrading without adding DunwiseCurrency (Temporal Cloud, where dunwise only prints the
    command): new invoices are refused with the server's reason, running ones wait, and
    both go on once the attribute is added."""
    async with invoice_harness(tmp_path, environment=without_currency) as h:
        with pytest.raises(
            RPCError, match="no mapping defined for search attribute DunwiseCurrency"
        ):
            await h.start("SA-NEW", due_on=DUE)
        start = invoice_input(
            h.invoice("SA-NEW"), "America/New_York", STANDARD, clock_offset=h.offset
        )
        older = [pair for pair in start_search_attributes(start) if pair.key != sa.CURRENCY]
        handle = await h.env.client.start_workflow(
            InvoiceWorkflow.run,
            start,
            id="invoice-SA-NEW",
            task_queue=h.settings.temporal_task_queue,
            search_attributes=TypedSearchAttributes(older),
        )
        deadline = time.monotonic() + 30
        while not any(e.event_type == TASK_FAILED for e in (await handle.fetch_history()).events):
            assert time.monotonic() < deadline, "the upsert of DunwiseCurrency did not fail"
            await asyncio.sleep(0.2)

        assert await register_search_attributes(h.env.client, h.env.client.namespace) is None
        while (await handle.describe()).typed_search_attributes.get(sa.CURRENCY) != "USD":
            assert time.monotonic() < deadline + 30, "the workflow did not go on"
            await asyncio.sleep(0.3)
        state = await h.state(handle)
        assert (state.status, state.stage) == ("open", "scheduled")
        assert (await h.start("SA-NEXT", due_on=DUE)).id == "invoice-SA-NEXT"


def test_start_attributes_follow_the_ledger_status_and_the_clock():
    policy = STANDARD
    invoice = ledger_invoice(
        "SA-2",
        "acme",
        policy,
        due_on=date(2026, 2, 1),
        issued_on=date(2026, 1, 1),
        amount_minor=12_000,
        currency="JPY",
        status="disputed",
    )
    start = invoice_input(invoice, "Asia/Tokyo", policy)
    attributes = start_search_attributes(start, now=datetime(2026, 2, 11, 1, 0, tzinfo=UTC))
    assert {pair.key.name: pair.value for pair in attributes} == {
        "DunwiseStatus": "disputed",
        "DunwiseStage": "disputed",
        "DunwiseCustomer": "acme",
        "DunwiseCurrency": "JPY",
        "DunwiseAmountDue": 12_000,
        "DunwiseDaysPastDue": 10,  # 10:00 on 02-11 in Tokyo
        "DunwiseDueOn": datetime(2026, 2, 1, tzinfo=ZoneInfo("Asia/Tokyo")),
    }
    # A what-if run's clock is behind by its offset: not yet due then.
    earlier = start.model_copy(update={"clock_offset": timedelta(days=30)})
    attributes = start_search_attributes(earlier, now=datetime(2026, 2, 11, 1, 0, tzinfo=UTC))
    assert attributes.get(sa.DAYS_PAST_DUE) == 0


# ----------------------------------------------------------------- continue-as-new


@workflow.defn(sandboxed=False)
class CarryOver:
    """Upserts the currency, continues as new, and reports what the new run's info holds."""

    @workflow.run
    async def run(self, continued: bool) -> dict[str, str]:
        if not continued:
            workflow.upsert_search_attributes([sa.CURRENCY.value_set("EUR")])
            workflow.continue_as_new(True)
        return {p.key.name: str(p.value) for p in workflow.info().typed_search_attributes}


@pytest.mark.parametrize("environment", ["dev", "time-skipping"])
async def test_continue_as_new_keeps_what_was_published(environment: str):
    """_publish compares with workflow.info(): after continue-as-new that still holds the
    start attributes and every upsert of the run before."""
    start = dev_server_environment if environment == "dev" else time_skipping_environment
    async with await start() as env:
        queue = f"carry-{uuid.uuid4()}"
        async with Worker(env.client, task_queue=queue, workflows=[CarryOver]):
            held = await env.client.execute_workflow(
                CarryOver.run,
                False,
                id=f"carry-{uuid.uuid4()}",
                task_queue=queue,
                search_attributes=TypedSearchAttributes([SearchAttributePair(sa.STATUS, "open")]),
            )
    assert held == {"DunwiseStatus": "open", "DunwiseCurrency": "EUR"}


# ----------------------------------------------------------------- listing by currency


async def test_invoices_are_listed_by_currency(tmp_path: Path):
    async with invoice_harness(tmp_path, environment=dev_server_environment) as h:
        await h.start("CUR-1", due_on=DUE, amount_minor=120_000, currency="EUR")
        await h.start("CUR-2", due_on=DUE, amount_minor=30_000, currency="EUR")
        await h.start("CUR-3", due_on=DUE, amount_minor=120_000, currency="USD")
        await h.start("CUR-4", due_on=DUE, amount_minor=900_000, currency="JPY")
        queries = {
            'DunwiseCurrency = "EUR"': ["invoice-CUR-1", "invoice-CUR-2"],
            'DunwiseCurrency = "EUR" AND DunwiseAmountDue > 100000': ["invoice-CUR-1"],
            'DunwiseCurrency = "USD" AND DunwiseAmountDue > 100000': ["invoice-CUR-3"],
            'DunwiseCurrency IN ("JPY", "USD")': ["invoice-CUR-3", "invoice-CUR-4"],
            'DunwiseCurrency = "GBP"': [],
        }
        found = await listed(h.env.client, queries)
        assert found == queries


async def listed(client: Client, queries: dict[str, list[str]]) -> dict[str, list[str]]:
    """What each query lists, once visibility (eventually consistent) shows what is expected."""
    deadline = time.monotonic() + 30
    while True:
        found = {q: sorted([w.id async for w in client.list_workflows(q)]) for q in queries}
        if found == queries or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.3)


# ----------------------------------------------------------------- registration


async def bare_dev_server() -> WorkflowEnvironment:
    """A dev server on loopback with none of dunwise's attributes."""
    return await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=installed_binary("temporal"),
        dev_server_log_level="error",
        ui=False,
    )


async def custom_attributes(client: Client) -> dict[str, int]:
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    return {k: v for k, v in listed.custom_attributes.items() if k.startswith("Dunwise")}


async def test_registration_adds_what_the_namespace_lacks():
    async with await bare_dev_server() as env:
        client = env.client
        assert await custom_attributes(client) == {}
        assert await register_search_attributes(client, client.namespace) is None
        added = await custom_attributes(client)
        assert added == {
            "DunwiseStatus": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
            "DunwiseStage": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
            "DunwiseCustomer": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
            "DunwiseCurrency": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
            "DunwisePriority": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
            "DunwiseDaysPastDue": IndexedValueType.INDEXED_VALUE_TYPE_INT,
            "DunwiseAmountDue": IndexedValueType.INDEXED_VALUE_TYPE_INT,
            "DunwiseDueOn": IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
        }
        assert await register_search_attributes(client, client.namespace) is None  # again

        # A namespace set up before the currency attribute existed gets it.
        await client.operator_service.remove_search_attributes(
            RemoveSearchAttributesRequest(
                namespace=client.namespace, search_attributes=["DunwiseCurrency"]
            )
        )
        assert "DunwiseCurrency" not in await custom_attributes(client)
        assert await register_search_attributes(client, client.namespace) is None
        assert await custom_attributes(client) == added


async def test_an_attribute_of_another_type_is_a_clear_error():
    async with await bare_dev_server() as env:
        client = env.client
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=client.namespace,
                search_attributes={"DunwiseCurrency": IndexedValueType.INDEXED_VALUE_TYPE_INT},
            )
        )
        with pytest.raises(RuntimeError) as refused:
            await register_search_attributes(client, client.namespace)
        assert str(refused.value) == (
            f"search attributes of namespace {client.namespace} clash with dunwise's: "
            "DunwiseCurrency is INT there, not KEYWORD"
        )


async def test_with_an_api_key_nothing_is_registered_and_the_commands_come_back(caplog):
    settings = Settings(_env_file=None, temporal_api_key=SecretStr(SECRET))
    async with await bare_dev_server() as env:
        address = env.client.service_client.config.target_host
        assert settings.temporal_api_key is not None
        # The dev server ignores the key; TLS stays off: it is a plain loopback server.
        client = await Client.connect(
            address,
            namespace=settings.temporal_namespace,
            api_key=settings.temporal_api_key.get_secret_value(),
            tls=False,
        )
        with caplog.at_level(logging.WARNING, logger="dunwise.temporal"):
            commands = await register_search_attributes(client, settings.temporal_namespace)
            # Quietly, for one-off commands (`dunwise import`): the same answer.
            quiet = await register_search_attributes(client, "default", announce=False)
        assert await custom_attributes(env.client) == {}, "nothing was added"
    assert commands is not None
    assert commands.splitlines() == [
        f"temporal operator search-attribute create --address {address} --namespace default "
        '--api-key "$TEMPORAL_API_KEY" --name DunwiseStatus --name DunwiseStage '
        "--name DunwiseCustomer --name DunwiseCurrency --name DunwisePriority --type Keyword",
        f"temporal operator search-attribute create --address {address} --namespace default "
        '--api-key "$TEMPORAL_API_KEY" --name DunwiseDaysPastDue --name DunwiseAmountDue '
        "--type Int",
        f"temporal operator search-attribute create --address {address} --namespace default "
        '--api-key "$TEMPORAL_API_KEY" --name DunwiseDueOn --type Datetime',
    ]
    [record] = caplog.records  # the quiet call logged nothing
    assert "with an API key (as for Temporal Cloud) dunwise does not add" in record.getMessage()
    assert commands in record.getMessage()
    assert "the Temporal CLI skips those that exist already" in record.getMessage()
    assert SECRET not in record.getMessage()
    assert quiet == commands


def test_temporal_cloud_gets_tcld_commands():
    settings = Settings(
        _env_file=None,
        temporal_address="dunwise-prod.a1b2c.tmprl.cloud:7233",
        temporal_namespace="dunwise-prod.a1b2c",
        temporal_api_key=SecretStr(SECRET),
    )
    expected = (
        "tcld namespace search-attributes add -n dunwise-prod.a1b2c "
        "--sa DunwiseStatus=Keyword --sa DunwiseStage=Keyword --sa DunwiseDaysPastDue=Int "
        "--sa DunwiseCustomer=Keyword --sa DunwiseAmountDue=Int --sa DunwiseDueOn=Datetime "
        "--sa DunwiseCurrency=Keyword --sa DunwisePriority=Keyword"
    )
    assert search_attribute_commands(settings) == expected
    regional = settings.model_copy(
        update={"temporal_address": "us-east-1.aws.api.temporal.io:7233"}
    )
    assert search_attribute_commands(regional) == expected
    assert SECRET not in expected


def test_self_hosted_commands_name_the_cluster():
    settings = Settings(
        _env_file=None,
        temporal_address="temporal.internal:7233",
        temporal_namespace="billing team",
        temporal_tls=True,
    )
    lines = search_attribute_commands(settings).splitlines()
    assert lines[0] == (
        "temporal operator search-attribute create --address temporal.internal:7233 "
        "--namespace 'billing team' --tls --name DunwiseStatus --name DunwiseStage "
        "--name DunwiseCustomer --name DunwiseCurrency --name DunwisePriority --type Keyword"
    )
    assert [line.rsplit(" ", 1)[-1] for line in lines] == ["Keyword", "Int", "Datetime"]
    embedded = Settings(_env_file=None, temporal_dev_port=7299)
    assert search_attribute_commands(embedded).startswith(
        "temporal operator search-attribute create --address 127.0.0.1:7299 --namespace default "
        "--name DunwiseStatus"
    )
    assert registration_commands(
        "TMPRL.CLOUD.example:7233", "x", tls=True, api_key=True
    ).startswith("temporal operator"), "only Temporal Cloud's own hosts get tcld"


async def test_the_embedded_server_registers_every_attribute(tmp_path: Path):
    settings = Settings.scratch(tmp_path, task_queue="sa").model_copy(
        update={"temporal_dev_port": 0, "temporal_ui": False}
    )
    async with EmbeddedServer(settings, ui=False) as server:
        assert server.client is not None
        assert set(await custom_attributes(server.client)) == names(sa.ALL)
        # A data folder whose server predates an attribute gets it when the server starts.
        await server.client.operator_service.remove_search_attributes(
            RemoveSearchAttributesRequest(
                namespace=settings.temporal_namespace, search_attributes=["DunwiseCurrency"]
            )
        )
        await server.restart()
        assert server.client is not None
        assert set(await custom_attributes(server.client)) == names(sa.ALL)
