"""Policy files: every error with its file, line and field; shipped policies; selection; schema."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import jsonschema
import pytest
import yaml

from policies.errors import PolicyError, PolicyFileError
from policies.loader import (
    SCHEMA_PATH,
    check_policy_files,
    load_policies,
    load_policy,
    policy_json_schema,
    select_policy,
    write_json_schema,
)
from policies.schema import Policy

POLICY_DIR = Path(__file__).resolve().parent.parent / "policies"
SHIPPED = sorted(POLICY_DIR.glob("*.yaml"))

GOOD = """\
name: good
version: 1
calendar: {business_days: true, holidays: US}
steps:
  - {at: -3d, channels: [email], template: courtesy}
  - {at: 0d, channels: [email, sms], template: due_today}
  - {at: +30d, escalate: {queue: collections}}
"""


def write(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def errors(path: Path) -> list[tuple[int | None, str, str]]:
    return [(e.line, e.field, e.message) for e in check_policy_files([path])]


def the_error(tmp_path: Path, text: str) -> PolicyError:
    path = write(tmp_path, text)
    [error] = check_policy_files([path])
    assert error.file == str(path)
    return error


# --- shipped policies -------------------------------------------------------------------------------


def test_shipped_policies_pass_the_check() -> None:
    assert len(SHIPPED) >= 3
    assert check_policy_files(SHIPPED) == []


def test_load_shipped_policies() -> None:
    policies = load_policies(POLICY_DIR)
    assert set(policies) >= {"standard", "enterprise", "strict"}
    assert policies["standard"] == load_policy(POLICY_DIR / "standard.yaml")
    enterprise = policies["enterprise"]
    assert enterprise.applies_to.segments == ["enterprise"]
    assert enterprise.calendar.timezone != "customer"
    assert enterprise.steps[-1].escalate is not None
    assert enterprise.steps[-1].escalate.queue == "key-accounts"


def test_good_file_loads(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, GOOD))
    assert policy.name == "good"
    assert [step.at for step in policy.steps] == [-3, 0, 30]


# --- bad files: exact file, line, field --------------------------------------------------------------


def test_bad_offset(tmp_path: Path) -> None:
    error = the_error(tmp_path, GOOD.replace("at: 0d", "at: 3 days"))
    assert (error.line, error.field) == (6, "steps[1].at")
    assert error.message == "offset must look like -3d, 0d or +7d, not '3 days'"
    assert str(error) == (
        f"{error.file}:6: steps[1].at: offset must look like -3d, 0d or +7d, not '3 days'"
    )


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    error = the_error(tmp_path, GOOD.replace("template: due_today", "tempalte: due_today"))
    assert (error.line, error.field) == (6, "steps[1].tempalte")
    assert error.message == "unknown key 'tempalte': did you mean 'template'?"


def test_unknown_key_lists_allowed_keys(tmp_path: Path) -> None:
    error = the_error(tmp_path, GOOD + "colour: blue\n")
    assert (error.line, error.field) == (8, "colour")
    assert error.message.startswith("unknown key 'colour': expected one of name, version,")


def test_unknown_top_level_typo(tmp_path: Path) -> None:
    error = the_error(tmp_path, GOOD.replace("calendar:", "calender:"))
    assert (error.line, error.field) == (3, "calender")
    assert error.message == "unknown key 'calender': did you mean 'calendar'?"


def test_channel_fax(tmp_path: Path) -> None:
    error = the_error(tmp_path, GOOD.replace("[email, sms]", "[email, fax]"))
    assert (error.line, error.field) == (6, "steps[1].channels[1]")
    assert error.message == "input should be 'email' or 'sms', not 'fax'"


def test_template_missing(tmp_path: Path) -> None:
    error = the_error(tmp_path, GOOD.replace(", template: courtesy", ""))
    assert (error.line, error.field) == (5, "steps[0]")
    assert error.message == "a step with channels needs a template"


def test_steps_not_increasing(tmp_path: Path) -> None:
    error = the_error(tmp_path, GOOD.replace("at: +30d", "at: -5d"))
    assert (error.line, error.field) == (7, "steps[2].at")
    assert error.message == (
        "steps must be in increasing order of `at`: -5d is not after the step before (0d)"
    )


def test_bad_send_window(tmp_path: Path) -> None:
    text = GOOD.replace("holidays: US}", 'holidays: US, send_window: "17:00-09:00"}')
    error = the_error(tmp_path, text)
    assert (error.line, error.field) == (3, "calendar.send_window")
    assert error.message == "send window must end after it starts, not 17:00-09:00"


def test_unknown_timezone(tmp_path: Path) -> None:
    error = the_error(
        tmp_path, GOOD.replace("{business_days", "{timezone: Mars/Olympus, business_days")
    )
    assert (error.line, error.field) == (3, "calendar.timezone")
    assert "unknown time zone 'Mars/Olympus'" in error.message


def test_unknown_holidays_country(tmp_path: Path) -> None:
    error = the_error(tmp_path, GOOD.replace("holidays: US", "holidays: XX"))
    assert (error.line, error.field) == (3, "calendar.holidays")
    assert error.message.startswith("unknown holidays country 'XX'")


def test_block_style_lines(tmp_path: Path) -> None:
    text = """\
name: block
version: 1
calendar:
  timezone: Europe/Berlin
  send_window: 9-5
steps:
  - at: 0d
    channels:
      - email
      - pigeon
    template: due_today
  - at: +7d
    escalate:
      queue: collections
      priority: asap
"""
    assert errors(write(tmp_path, text)) == [
        (5, "calendar.send_window", "send window must look like 09:00-17:00, not '9-5'"),
        (10, "steps[0].channels[1]", "input should be 'email' or 'sms', not 'pigeon'"),
        (
            15,
            "steps[1].escalate.priority",
            "input should be 'low', 'normal', 'high' or 'urgent', not 'asap'",
        ),
    ]


def test_every_error_in_a_file_is_reported(tmp_path: Path) -> None:
    text = """\
name: Bad Name
version: 0
applies_to: {segments: [smb, smb], min_balance: "-1"}
calendar: {timezone: Mars/Olympus, business_days: true, holidays: XX, send_window: "17:00-09:00"}
steps:
  - {at: 3 days, channels: [email], template: courtesy}
  - {at: 0d, channels: [email, fax], template: due_today}
  - {at: +7d, channels: [email]}
  - {at: +5d, channels: [email], tempalte: overdue_firm}
  - {at: +30d, escalate: {queue: collections, sla: 2 days}, late_fee: {percent: "150"}}
on_dispute: ignore
"""
    found = errors(write(tmp_path, text))
    assert [(line, field) for line, field, _ in found] == [
        (1, "name"),
        (2, "version"),
        (3, "applies_to.segments"),
        (3, "applies_to.min_balance"),
        (4, "calendar.timezone"),
        (4, "calendar.holidays"),
        (4, "calendar.send_window"),
        (6, "steps[0].at"),
        (7, "steps[1].channels[1]"),
        (8, "steps[2]"),
        (9, "steps[3].tempalte"),
        (10, "steps[4].late_fee.percent"),
        (10, "steps[4].escalate.sla"),
        (11, "on_dispute"),
    ]
    with pytest.raises(PolicyFileError) as caught:
        load_policy(tmp_path / "policy.yaml")
    assert len(caught.value.errors) == len(found)
    assert str(caught.value).count("\n") == len(found) - 1
    assert f"{tmp_path / 'policy.yaml'}:11: on_dispute: " in str(caught.value)


def test_missing_required_fields_point_at_the_parent(tmp_path: Path) -> None:
    text = "name: incomplete\nsteps:\n  - {at: 0d, escalate: {priority: high}}\n"
    assert errors(write(tmp_path, text)) == [
        (1, "version", "field required"),
        (3, "steps[0].escalate.queue", "field required"),
    ]


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    text = GOOD + "version: 2\n"
    assert errors(write(tmp_path, text)) == [(8, "version", "key 'version' appears twice")]


def test_yaml_syntax_error(tmp_path: Path) -> None:
    text = GOOD.replace(
        "- {at: 0d, channels: [email, sms], template: due_today}",
        "- {at: 0d, channels: [email, sms]",
    )
    error = the_error(tmp_path, text)
    assert error.field == ""
    assert error.line == 7
    assert error.message.startswith("YAML syntax error: ")
    assert "while parsing a flow mapping on line 6" in error.message


def test_yaml_indentation_error(tmp_path: Path) -> None:
    error = the_error(tmp_path, "name: x\nversion: 1\n steps: []\n")
    assert error.line == 3
    assert error.message == "YAML syntax error: mapping values are not allowed here"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert check_policy_files([path]) == [PolicyError(str(path), None, "", "file not found")]
    with pytest.raises(PolicyFileError, match=r"nope\.yaml: file not found"):
        load_policy(path)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    error = the_error(tmp_path, text)
    assert (error.line, error.message) == (None, "file is empty")


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "42\n"])
def test_file_that_is_not_a_mapping(tmp_path: Path, text: str) -> None:
    error = the_error(tmp_path, text)
    assert error.line == 1 and "must be a mapping" in error.message


def test_folder_and_binary(tmp_path: Path) -> None:
    assert the_error_for(tmp_path) == "is a folder, not a policy file"
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00name")
    [error] = check_policy_files([binary])
    assert error.message == "is not UTF-8 text"


def the_error_for(path: Path) -> str:
    [error] = check_policy_files([path])
    return error.message


def test_unsafe_tags_are_refused(tmp_path: Path) -> None:
    error = the_error(tmp_path, "!!python/object/apply:os.system ['echo hi']\n")
    assert error.message.startswith("YAML syntax error:")


# --- YAML quirks ---------------------------------------------------------------------------------------


def test_unquoted_decimals_are_exact(tmp_path: Path) -> None:
    text = GOOD.replace("version: 1\n", "version: 1\napplies_to: {min_balance: 10.10}\n").replace(
        "template: due_today}", "template: due_today, late_fee: {percent: 1.5}}"
    )
    policy = load_policy(write(tmp_path, text))
    assert policy.applies_to.min_balance == Decimal("10.10")
    assert str(policy.applies_to.min_balance) == "10.10"
    assert policy.steps[1].late_fee is not None
    assert policy.steps[1].late_fee.percent == Decimal("1.5")


def test_norway_is_not_false(tmp_path: Path) -> None:
    # YAML 1.1 reads NO as false; policies only treat true/false as booleans.
    policy = load_policy(write(tmp_path, GOOD.replace("holidays: US", "holidays: NO")))
    assert policy.calendar.holidays == "NO"


def test_infinity_is_refused(tmp_path: Path) -> None:
    text = GOOD.replace("version: 1\n", "version: 1\napplies_to: {min_balance: .inf}\n")
    [(line, field, _)] = errors(write(tmp_path, text))
    assert (line, field) == (3, "applies_to.min_balance")


# --- several files ---------------------------------------------------------------------------------------


def test_duplicate_policy_names_across_files(tmp_path: Path) -> None:
    first = write(tmp_path, GOOD, "a.yaml")
    second = write(tmp_path, GOOD, "b.yaml")
    assert check_policy_files([first, second]) == [
        PolicyError(str(second), 1, "name", f"policy name 'good' is already used by {first}")
    ]
    with pytest.raises(PolicyFileError, match="already used"):
        load_policies(tmp_path)


def test_load_policies_reports_every_bad_file(tmp_path: Path) -> None:
    write(tmp_path, GOOD, "good.yaml")
    write(
        tmp_path, GOOD.replace("name: good", "name: other").replace("[email]", "[fax]"), "bad1.yaml"
    )
    write(tmp_path, "name: [", "bad2.yaml")
    write(tmp_path, "not: a policy", "notes.txt")
    with pytest.raises(PolicyFileError) as caught:
        load_policies(tmp_path)
    assert sorted(Path(e.file).name for e in caught.value.errors) == ["bad1.yaml", "bad2.yaml"]


def test_load_policies_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError, match="folder not found"):
        load_policies(tmp_path / "missing")


# --- selection ---------------------------------------------------------------------------------------------


def make(name: str, segments: list[str], min_balance: str = "0") -> Policy:
    return Policy.model_validate(
        {
            "name": name,
            "version": 1,
            "applies_to": {"segments": segments, "min_balance": min_balance},
            "steps": [{"at": 0, "escalate": {"queue": "collections"}}],
        }
    )


def test_select_shipped_policies() -> None:
    policies = load_policies(POLICY_DIR)
    assert select_policy(policies, "smb", 5000).name == "standard"
    assert select_policy(policies, "mid-market", 1000).name == "standard"
    assert select_policy(policies, "enterprise", 1).name == "enterprise"
    assert select_policy(policies, "high-risk", 100).name == "strict"
    # Below the standard policy's 10.00 minimum nothing applies.
    assert select_policy(policies, "smb", 999) is None
    assert select_policy(policies, "smb", 1000).name == "standard"


def test_select_prefers_the_specific_policy() -> None:
    catch_all = make("catch-all", [])
    standard = make("standard", [])
    smb = make("smb-only", ["smb"])
    big_smb = make("big-smb", ["smb"], "5000.00")
    policies = {p.name: p for p in [catch_all, standard, smb, big_smb]}
    assert select_policy(policies, "smb", 100) == smb
    assert select_policy(policies, "smb", 500000) == big_smb
    assert select_policy(policies, "retail", 100) == standard
    assert select_policy(policies, None, 100) == standard
    assert select_policy([catch_all], "retail", 0) == catch_all
    assert select_policy({}, "smb", 100) is None


def test_select_uses_the_currency_exponent() -> None:
    policy = make("standard", [], "10.00")
    assert select_policy([policy], "smb", 10, exponent=0) == policy
    assert select_policy([policy], "smb", 9, exponent=0) is None
    assert select_policy([policy], "smb", 9999, exponent=3) is None


# --- JSON Schema ---------------------------------------------------------------------------------------------


def test_shipped_json_schema_is_current() -> None:
    # Regenerate with: python -c "from policies.loader import write_json_schema; write_json_schema()"
    assert json.loads(SCHEMA_PATH.read_text(encoding="utf-8")) == policy_json_schema()


def test_write_json_schema(tmp_path: Path) -> None:
    target = tmp_path / "schema.json"
    write_json_schema(target)
    assert json.loads(target.read_text(encoding="utf-8")) == policy_json_schema()


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: path.name)
def test_json_schema_accepts_shipped_policies(path: Path) -> None:
    jsonschema.Draft202012Validator.check_schema(policy_json_schema())
    jsonschema.validate(yaml.safe_load(path.read_text(encoding="utf-8")), policy_json_schema())


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("at: 0d", "at: 3 days"),
        ("template: due_today", "tempalte: due_today"),
        ("[email, sms]", "[email, fax]"),
        ("queue: collections", "queue: Collections Team"),
        ("version: 1", "version: 0"),
        ("{business_days: true", '{send_window: "9-5", business_days: true'),
    ],
)
def test_json_schema_rejects_what_editors_can_catch(old: str, new: str) -> None:
    document = yaml.safe_load(GOOD.replace(old, new))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, policy_json_schema())


# --- message templates -----------------------------------------------------------------------------------


def test_unknown_templates_are_reported_when_templates_are_given(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("template: due_today", "template: due_tomorrow"))
    assert check_policy_files([path]) == []
    [error] = check_policy_files([path], templates={"courtesy", "due_today"})
    assert (error.line, error.field) == (6, "steps[1].template")
    assert "due_tomorrow" in error.message and "courtesy, due_today" in error.message


def test_shipped_policies_use_existing_templates() -> None:
    from activities.rendering import available_templates

    assert check_policy_files(SHIPPED, templates=available_templates()) == []


# --- every error at once: step order and templates despite other errors ------------------------------------

KNOWN = {"courtesy", "due_today", "overdue_friendly", "overdue_firm"}


def test_order_and_templates_are_checked_despite_other_errors(tmp_path: Path) -> None:
    text = """\
name: Bad Name
version: 0
applies_to: {segments: [smb, smb], min_balance: "-1"}
calendar: {timezone: Mars/Olympus, business_days: true, holidays: XX, send_window: "17:00-09:00"}
steps:
  - {at: +3d, channels: [email], template: courtesy}
  - {at: 0d, channels: [email, fax], template: due_today}
  - at: +1d
    channels: [email]
    template: overdue_freindly
    channels: [sms]
  - {at: +7d, channels: [email]}
  - {at: +30d, escalate: {queue: collections, sla: 2 days}, late_fee: {percent: "150"}}
on_dispute: ignore
"""
    path = write(tmp_path, text)
    found = [(e.line, e.field, e.message) for e in check_policy_files([path], templates=KNOWN)]
    assert [(line, field) for line, field, _ in found] == [
        (1, "name"),
        (2, "version"),
        (3, "applies_to.segments"),
        (3, "applies_to.min_balance"),
        (4, "calendar.timezone"),
        (4, "calendar.holidays"),
        (4, "calendar.send_window"),
        (7, "steps[1].channels[1]"),
        (8, "steps[2].at"),
        (10, "steps[2].template"),
        (11, "steps[2].channels"),
        (12, "steps[3]"),
        (13, "steps[4].late_fee.percent"),
        (13, "steps[4].escalate.sla"),
        (14, "on_dispute"),
    ]
    # steps[1] is invalid, so steps[2] is compared with the valid step before it.
    assert found[8][2] == (
        "steps must be in increasing order of `at`: +1d is not after the step before (+3d)"
    )
    assert found[9][2] == (
        "no message template 'overdue_freindly'; "
        "known: courtesy, due_today, overdue_firm, overdue_friendly"
    )
    assert found[10][2] == "key 'channels' appears twice"
    # Without templates to check against, only the template error goes.
    assert len(check_policy_files([path])) == len(found) - 1
    with pytest.raises(PolicyFileError) as caught:
        load_policy(path, templates=KNOWN)
    assert [(e.line, e.field, e.message) for e in caught.value.errors] == found
    assert str(caught.value).count("\n") == len(found) - 1


def test_order_error_is_not_reported_twice(tmp_path: Path) -> None:
    # Every step is valid, so the schema itself reports the order; the file has other errors.
    text = GOOD.replace("name: good", "name: Good").replace("at: +30d", "at: -5d")
    assert errors(write(tmp_path, text)) == [
        (
            1,
            "name",
            "'Good' is not a slug: use lowercase letters, digits, '-' or '_' "
            "(like due_today or mid-market)",
        ),
        (
            7,
            "steps[2].at",
            "steps must be in increasing order of `at`: -5d is not after the step before (0d)",
        ),
    ]


def test_only_valid_steps_are_checked_for_order_and_templates(tmp_path: Path) -> None:
    # A step with its own errors is left out: its `at` and template are not trusted.
    text = GOOD.replace(
        "{at: 0d, channels: [email, sms], template: due_today}",
        "{at: -9d, channels: [email, fax], template: nowhere}",
    )
    assert errors(write(tmp_path, text)) == [
        (6, "steps[1].channels[1]", "input should be 'email' or 'sms', not 'fax'"),
    ]
    assert [e.field for e in check_policy_files([tmp_path / "policy.yaml"], KNOWN)] == [
        "steps[1].channels[1]"
    ]


def test_errors_are_sorted_by_file_then_line(tmp_path: Path) -> None:
    first = write(tmp_path, GOOD.replace("version: 1", "version: 0"), "a.yaml")
    second = write(tmp_path, GOOD.replace("name: good", "name: Good"), "b.yaml")
    found = check_policy_files([second, first])
    assert [(Path(e.file).name, e.line) for e in found] == [("a.yaml", 2), ("b.yaml", 1)]


# --- loading checks message templates --------------------------------------------------------------


def test_load_policies_refuses_an_unknown_template(tmp_path: Path) -> None:
    write(tmp_path, GOOD, "good.yaml")
    path = write(
        tmp_path,
        GOOD.replace("name: good", "name: other").replace("template: due_today", "template: nope"),
        "other.yaml",
    )
    with pytest.raises(PolicyFileError) as caught:
        load_policies(tmp_path)
    [error] = caught.value.errors
    assert (error.file, error.line, error.field) == (str(path), 6, "steps[1].template")
    assert error.message.startswith("no message template 'nope'; known: ")
    assert "due_today" in error.message
    with pytest.raises(PolicyFileError, match=r"other\.yaml:6: steps\[1\]\.template: "):
        load_policy(path)


def test_load_checks_against_the_templates_given(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("template: due_today", "template: due_tomorrow"))
    assert load_policy(path, templates={"courtesy", "due_tomorrow"}).name == "good"
    assert set(load_policies(tmp_path, templates={"courtesy", "due_tomorrow"})) == {"good"}
    with pytest.raises(PolicyFileError, match=r"steps\[0\]\.template: no message template"):
        load_policies(tmp_path, templates={"due_tomorrow"})


def test_loader_import_leaves_out_jinja2() -> None:
    # invoices.py imports the loader; templates are only looked up when a policy is loaded.
    code = "import sys, policies.loader; assert 'jinja2' not in sys.modules, 'jinja2 imported'"
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)
