"""Every malformed policy in tests/corpus/policies/ is refused quickly by `dunwise policy check`.

Each file runs through the command's code path (commands.policy.policy_check) and through
load_policy in a forked child with a time limit, so an alias bomb or a runaway parse fails
the test instead of hanging it. Every error line names the file, and the one this table
expects names its line and field. The worst inputs also go through the real command line in
a subprocess. Inputs too large to keep in the repository are made here (GENERATED).
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from activities.rendering import available_templates
from commands.policy import policy_check
from ledger.currencies import MAX_AMOUNT_IN_EVERY_CURRENCY
from policies.errors import PolicyFileError
from policies.loader import load_policy
from policies.yaml_reader import MAX_FILE_BYTES
from tests.forked import run_forked

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).resolve().parent / "corpus" / "policies"
TIME_LIMIT = 30  # seconds per file; each takes well under one
DUNWISE = [sys.executable, "-c", "import starter; starter.main()"]

ALIASES = "YAML aliases ({}) are not allowed in a policy: write the value out"
NESTED = "nested more than 20 levels deep"
NOT_UTF8 = "is not UTF-8 text"
TEN_YEARS = "is longer than 3650 days (ten years)"
OVER_64 = "is longer than 64 characters"
MONEY_LIMIT = "is more than the largest amount the ledger holds in every currency"
NO_SLUG = "is not a slug"
EMPTY = "file is empty"
NOT_A_MAPPING = "a policy must be a mapping with keys like name, version and steps"

# file -> (where, part of the message): the error line reads "<file>:<where>: <message>",
# where is "line: field", a line alone, or "" for the file as a whole ("<file>: <message>").
EXPECTED: dict[str, tuple[str, str]] = {
    "alias_bomb_billion_laughs.yaml": ("6", ALIASES.format("*a")),
    "alias_bomb_in_steps.yaml": ("4", ALIASES.format("*l0")),
    "alias_bomb_mappings.yaml": ("6", ALIASES.format("*x0")),
    "alias_merge_key.yaml": ("5", ALIASES.format("*defaults")),
    "alias_plain.yaml": ("5", ALIASES.format("*first")),
    "alias_recursive.yaml": ("3", ALIASES.format("*s")),
    "alias_undefined.yaml": ("3", ALIASES.format("*nowhere")),
    "binary_garbage.yaml": ("", NOT_UTF8),
    "bom_then_bad_version.yaml": ("2: version", "greater than or equal to 1, not -1"),
    "calendar_is_a_string.yaml": ("5: calendar", "valid dictionary"),
    "channel_unknown.yaml": ("4: steps[0].channels[0]", "'email' or 'sms', not 'pigeon'"),
    "crlf_bad_version.yaml": ("2: version", "greater than or equal to 1, not 0"),
    "deep_nesting_block.yaml": ("23", NESTED),
    "deep_nesting_flow_mappings.yaml": ("3", NESTED),
    "deep_nesting_flow_sequences.yaml": ("3", NESTED),
    "deep_nesting_in_late_fee.yaml": ("4", NESTED),
    "duplicate_keys.yaml": ("5: version", "key 'version' appears twice"),
    "duration_5000_digits.yaml": ("5: on_promise_to_pay.grace", TEN_YEARS),
    "duration_fullwidth_digits.yaml": ("5: on_promise_to_pay.grace", "must look like 2d"),
    "duration_grace_99999999999h.yaml": ("5: on_promise_to_pay.grace", TEN_YEARS),
    "duration_negative.yaml": ("5: on_promise_to_pay.grace", "must look like 2d"),
    "duration_sla_3651d.yaml": ("4: steps[0].escalate.sla", f"'3651d' {TEN_YEARS}"),
    "duration_sla_99999999999d.yaml": ("4: steps[0].escalate.sla", f"'99999999999d' {TEN_YEARS}"),
    "duration_zero_sla.yaml": ("4: steps[0].escalate.sla", "sla must be longer than zero"),
    "empty.yaml": ("", EMPTY),
    "fixed_fee_huge.yaml": ("4: steps[0].late_fee.fixed", MONEY_LIMIT),
    "holidays_long.yaml": ("5: calendar.holidays", "at most 16 characters"),
    "key_is_a_mapping.yaml": ("5", "found unhashable key"),
    "latin1.yaml": ("", NOT_UTF8),
    "long_unknown_key.yaml": ("5", "could not find expected ':'"),
    "min_balance_1e309.yaml": ("5: applies_to.min_balance", f"1E+309 {MONEY_LIMIT}"),
    "min_balance_5000_digits.yaml": ("5: applies_to.min_balance", MONEY_LIMIT),
    "min_balance_above_limit.yaml": ("5: applies_to.min_balance", MONEY_LIMIT),
    "min_balance_nan.yaml": ("5: applies_to.min_balance", "finite number"),
    "min_balance_negative.yaml": ("5: applies_to.min_balance", "greater than or equal to 0"),
    "min_balance_unquoted_1e400.yaml": ("5: applies_to.min_balance", MONEY_LIMIT),
    "multiple_documents.yaml": ("5", "expected a single document"),
    "name_65_chars.yaml": ("1: name", OVER_64),
    "name_is_a_list.yaml": ("1: name", "valid string"),
    "name_uppercase.yaml": ("1: name", NO_SLUG),
    "name_with_newline.yaml": ("1: name", NO_SLUG),
    "nul_byte.yaml": ("1", "character '\\x00' is not allowed in YAML"),
    "null_document.yaml": ("", EMPTY),
    "offset_5000_digits.yaml": ("4: steps[0].at", "offset must look like -3d, 0d or +7d"),
    "offset_99999999999d.yaml": ("4: steps[0].at", "offset must look like -3d, 0d or +7d"),
    "offset_arabic_indic_digits.yaml": ("4: steps[0].at", "offset must look like -3d"),
    "offset_huge_integer.yaml": ("4: steps[0].at", "more than 3650 days from the due date"),
    "only_comments.yaml": ("", EMPTY),
    "percent_inf.yaml": ("4: steps[0].late_fee.percent", "floats are inexact"),
    "percent_nan.yaml": ("4: steps[0].late_fee.percent", "floats are inexact"),
    "percent_over_100.yaml": ("4: steps[0].late_fee.percent", "less than or equal to 100"),
    "python_object_tag.yaml": ("5", "could not determine a constructor"),
    "queue_65_chars.yaml": ("4: steps[0].escalate.queue", OVER_64),
    "segment_65_chars.yaml": ("5: applies_to.segments[0]", OVER_64),
    "segments_too_many.yaml": ("5: applies_to.segments", "at most 100 items"),
    "send_window_garbage.yaml": ("5: calendar.send_window", "is not a time of day"),
    "steps_empty.yaml": ("3: steps", "at least 1 item"),
    "steps_is_a_mapping.yaml": ("3: steps", "valid list"),
    "steps_out_of_order.yaml": ("5: steps[1].at", "increasing order"),
    "steps_too_many.yaml": ("3: steps", "at most 100 items"),
    "tabs_for_indentation.yaml": ("4", "found character '\\t' that cannot start any token"),
    "template_65_chars.yaml": ("4: steps[0].template", OVER_64),
    "template_unknown.yaml": ("4: steps[0].template", "no message template 'no_such_template'"),
    "timezone_long.yaml": ("5: calendar.timezone", "at most 64 characters"),
    "timezone_unknown.yaml": ("5: calendar.timezone", "unknown time zone 'Mars/Olympus'"),
    "top_level_list.yaml": ("1", NOT_A_MAPPING),
    "top_level_scalar.yaml": ("1", NOT_A_MAPPING),
    "unclosed_flow_mapping.yaml": ("5", "expected ',' or '}'"),
    "unknown_key_typo.yaml": ("5: on_disput", "did you mean 'on_dispute'?"),
    "unknown_keys_many.yaml": ("54", "and 2950 more problems, not shown"),
    "unknown_tag.yaml": ("5", "could not determine a constructor for the tag '!custom'"),
    "utf16.yaml": ("", NOT_UTF8),
    "version_2_to_the_31.yaml": ("2: version", "less than or equal to 2147483647"),
    "version_5000_digits.yaml": ("2: version", "a number of 5000 digits is too large"),
    "version_bool.yaml": ("2: version", "valid integer"),
    "version_float.yaml": ("2: version", "valid integer"),
    "version_hex_huge.yaml": ("2: version", "a number of 42 digits is too large"),
    "version_huge.yaml": ("2: version", "less than or equal to 2147483647"),
    "version_string.yaml": ("2: version", "valid integer"),
    "version_zero.yaml": ("2: version", "greater than or equal to 1"),
}

STEPS = "steps:\n  - {at: 0d, channels: [email], template: due_today}\n"

# Too large to keep in the repository: name -> (content, where, part of the message).
GENERATED: dict[str, tuple[str, str, str]] = {
    "over_the_size_limit.yaml": (
        "name: big\nversion: 1\n" + STEPS + "# " + "x" * MAX_FILE_BYTES + "\n",
        "",
        "is larger than 256 KiB: not a policy file",
    ),
    "name_of_100000_characters.yaml": (
        "name: " + "a" * 100_000 + "\nversion: 1\n" + STEPS,
        "1: name",
        OVER_64,
    ),
    "nested_100000_deep.yaml": (
        "name: deep\nversion: 1\nsteps: " + "[" * 100_000 + "]" * 100_000 + "\n",
        "3",
        NESTED,
    ),
}


def _check_as_the_command_does(path: Path) -> dict:
    """Runs in the child: `dunwise policy check FILE`, then load_policy on the same file."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = policy_check([path])
    try:
        load_policy(path)
        refused_by_load = None
    except PolicyFileError as refused:
        refused_by_load = [str(error) for error in refused.errors]
    return {
        "status": status,
        "lines": stderr.getvalue().splitlines(),
        "refused_by_load": refused_by_load,
    }


def _assert_refused(path: Path, where: str, message: str) -> None:
    result = run_forked(
        _check_as_the_command_does, path, timeout=TIME_LIMIT, label=f"policy check {path}"
    )
    assert result["status"] == 1
    *errors, count = result["lines"]
    assert count.endswith("error(s)")
    assert errors, "refused without saying why"
    for line in errors:
        assert line.startswith(f"{path}:") or line.startswith(f"{path}: "), line
        assert len(line) < 1000, f"an error line of {len(line)} characters"
    expected = f"{path}:{where}: " if where else f"{path}: "
    assert any(line.startswith(expected) and message in line for line in errors), (
        f"no {expected!r} ... {message!r} among:\n" + "\n".join(errors[:20])
    )
    assert result["refused_by_load"] is not None, "load_policy accepted what check refused"


def test_every_corpus_file_has_an_expectation() -> None:
    assert sorted(path.name for path in CORPUS.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_malformed_policy_is_refused(name: str) -> None:
    where, message = EXPECTED[name]
    _assert_refused(CORPUS / name, where, message)


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_oversized_policy_is_refused(tmp_path: Path, name: str) -> None:
    content, where, message = GENERATED[name]
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    _assert_refused(path, where, message)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("alias_bomb_billion_laughs.yaml", ":6: " + ALIASES.format("*a")),
        ("alias_bomb_in_steps.yaml", ":4: " + ALIASES.format("*l0")),
        ("deep_nesting_flow_sequences.yaml", ":3: " + NESTED),
        ("duration_sla_99999999999d.yaml", ":4: steps[0].escalate.sla: duration"),
        ("version_5000_digits.yaml", ":2: version: a number of 5000 digits is too large"),
    ],
)
def test_policy_check_command_refuses_hostile_files_promptly(name: str, expected: str) -> None:
    path = CORPUS / name
    result = subprocess.run(
        [*DUNWISE, "policy", "check", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert f"{path}{expected}" in result.stderr
    assert "Traceback" not in result.stderr


def test_values_at_every_limit_are_accepted(tmp_path: Path) -> None:
    name = "a" * 64
    steps = "".join(
        f"  - {{at: {day}d, channels: [email], template: {'t' * 64 if day == 0 else 'due_today'}}}\n"
        for day in range(100)
    )
    steps = steps.replace(
        "channels: [email], template: due_today}\n",
        "channels: [email], template: due_today, escalate: {queue: "
        + "q" * 64
        + ", sla: 3650d}}\n",
        1,
    )
    path = tmp_path / "limits.yaml"
    path.write_text(
        f"name: {name}\nversion: 2147483647\n"
        f'applies_to: {{min_balance: "{MAX_AMOUNT_IN_EVERY_CURRENCY}", '
        f"segments: [{', '.join('s' * 64 if i == 0 else f's{i}' for i in range(100))}]}}\n"
        "on_promise_to_pay: {grace: 87600h}\n"
        f"steps:\n{steps}",
        encoding="utf-8",
    )
    policy = load_policy(path, templates={*available_templates(), "t" * 64})
    assert (policy.name, policy.version, len(policy.steps)) == (name, 2**31 - 1, 100)
    assert policy.applies_to.min_balance == Decimal("9223372036854775.807")
    assert len(policy.applies_to.segments) == 100
    assert policy.steps[1].escalate is not None
    assert policy.steps[1].escalate.sla == timedelta(days=3650)
    assert policy.on_promise_to_pay.grace == timedelta(days=3650)
