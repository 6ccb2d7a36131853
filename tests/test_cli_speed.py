"""Commands that need no server load no server stack: `dunwise --help` and `dunwise policy ...`
answer without importing Temporal, the database, the web app or Stripe.

A structural check, not a timed one: the installed `dunwise` runs in a subprocess with
PYTHONPROFILEIMPORTTIME=1 (the same as `python -X importtime`), which lists on standard error
every module the process imports, and no module of those packages may be among them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DUNWISE = str(Path(sys.executable).with_name("dunwise"))  # the console script of the package
SHIPPED_POLICIES = sorted((ROOT / "policies").glob("*.yaml"))
# What only commands that talk to a server, a database or a payment provider may load.
SERVER_STACK = {
    "temporalio", "sqlalchemy", "sqlmodel", "alembic", "psycopg", "fastapi", "starlette",
    "uvicorn", "stripe", "localstripe", "sendgrid", "twilio",
}  # fmt: skip
# What help alone has no use for either: validating models, reading YAML, drawing bars.
PARSING_STACK = {"pydantic", "pydantic_core", "pydantic_settings", "yaml", "holidays", "rich"}


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str  # without the import-time lines
    packages: set[str]  # top-level packages of every module imported


def run_dunwise(*args: str) -> Run:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DUNWISE_")}
    env["PYTHONPROFILEIMPORTTIME"] = "1"
    done = subprocess.run(
        [DUNWISE, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    lines = done.stderr.splitlines()
    timing = [line for line in lines if line.startswith("import time:")]
    modules = [line.rsplit("|", 1)[1].strip() for line in timing[1:]]  # [0] is the header
    # The listing works: the command's own modules are in it.
    assert {"argparse", "starter", "commands.errors"} <= set(modules), done.stderr[-2000:]
    return Run(
        returncode=done.returncode,
        stdout=done.stdout,
        stderr="\n".join(line for line in lines if not line.startswith("import time:")),
        packages={name.split(".")[0] for name in modules},
    )


@pytest.mark.parametrize(
    "args", [["--help"], ["invoice", "--help"], ["invoice", "escalate", "--help"]], ids=" ".join
)
def test_help_loads_no_server_stack_and_no_validation(args):
    run = run_dunwise(*args)
    assert run.returncode == 0, run.stderr
    assert "usage: dunwise" in run.stdout
    assert not run.packages & SERVER_STACK
    assert not run.packages & PARSING_STACK


def test_escalate_offers_the_policy_languages_priorities():
    from policies.schema import PRIORITIES

    run = run_dunwise("invoice", "escalate", "--help")
    assert f"--priority {{{','.join(PRIORITIES)}}}" in run.stdout


def test_policy_check_of_the_shipped_policies_loads_no_server_stack():
    run = run_dunwise("policy", "check", *map(str, SHIPPED_POLICIES))
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"{len(SHIPPED_POLICIES)} policy file(s) OK\n"
    assert not run.packages & SERVER_STACK
    assert "pydantic" in run.packages  # it did validate


def test_policy_check_with_a_holiday_subdivision_loads_no_server_stack(tmp_path):
    policy = tmp_path / "regional.yaml"
    text = (ROOT / "policies" / "standard.yaml").read_text()
    assert "holidays: US" in text
    policy.write_text(text.replace("holidays: US", "holidays: us-ca"))
    run = run_dunwise("policy", "check", str(policy))
    assert run.returncode == 0, run.stderr
    assert not run.packages & SERVER_STACK
    assert "holidays" in run.packages


def test_policy_check_of_a_bad_file_reports_it_and_loads_no_server_stack(tmp_path):
    bad = tmp_path / "bad.yaml"
    shutil.copy(ROOT / "policies" / "standard.yaml", bad)
    bad.write_text(bad.read_text().replace("holidays: US", "holidays: ZZ"))
    run = run_dunwise("policy", "check", str(bad), str(tmp_path / "missing.yaml"))
    assert run.returncode == 1
    assert run.stdout == ""
    assert f"{bad}:" in run.stderr and "unknown holidays country 'ZZ'" in run.stderr
    assert f"{tmp_path / 'missing.yaml'}: file not found" in run.stderr
    assert not run.packages & SERVER_STACK


def test_policy_schema_loads_no_server_stack():
    run = run_dunwise("policy", "schema")
    assert run.returncode == 0, run.stderr
    assert run.stdout == (ROOT / "policies" / "policy.schema.json").read_text()
    assert not run.packages & SERVER_STACK


def test_an_unknown_command_is_refused_by_the_parser_alone():
    run = run_dunwise("frobnicate")
    assert run.returncode == 2
    assert "invalid choice: 'frobnicate'" in run.stderr
    assert not run.packages & (SERVER_STACK | PARSING_STACK)


@pytest.mark.parametrize(
    "args", [["templates", "list"], ["templates", "preview", "overdue_firm"]], ids=" ".join
)
def test_templates_load_no_server_stack(args):
    run = run_dunwise(*args)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip()
    assert not run.packages & SERVER_STACK
