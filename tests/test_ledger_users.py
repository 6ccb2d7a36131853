"""Console users in the ledger, on SQLite and PostgreSQL, and the commands that manage them.

Checked: emails lower-cased and unique, passwords only as argon2 hashes (rehashed when the
parameters age), five failures lock an account for fifteen minutes, every refusal says the
same words and an unknown email costs a password verification all the same, one-time codes
(and never the same one twice), API keys kept as hashes and refused once revoked, sessions
that end after twelve hours or at logout, and the `user` / `apikey` commands with the
password on standard input or typed twice at a real terminal.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import pty
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyotp
import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher
from sqlmodel import select

from commands.errors import CommandError
from commands.users import apikey_command, user_command
from ledger.api_keys import create_api_key, revoke_api_key, user_for_api_key
from ledger.console_sessions import close_session, open_session, session_user
from ledger.db import make_engine, session_scope
from ledger.models import ApiKey, AppUser, AuditEvent, ConsoleSession, Role
from ledger.users import (
    HASHER,
    LOGIN_REFUSED,
    DuplicateUser,
    InvalidUserInput,
    LoginRefused,
    UnknownUser,
    UserError,
    add_user,
    authenticate,
    enable_totp,
)
from settings import Settings

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
PASSWORD = "correct horse battery"
ANN = "ann@acme.example"


def add(
    engine: sa.Engine, email: str = ANN, role: Role | str = Role.COLLECTOR, password=PASSWORD
) -> AppUser:
    with session_scope(engine) as session:
        return add_user(session, email, password, role)


def login(engine: sa.Engine, email=ANN, password=PASSWORD, code=None, now=NOW) -> AppUser:
    with session_scope(engine) as session:
        return authenticate(session, email, password, code, now)


def refusal(engine: sa.Engine, email=ANN, password=PASSWORD, code=None, now=NOW) -> str:
    with pytest.raises(LoginRefused) as refused:
        login(engine, email, password, code, now)
    return str(refused.value)


def stored_user(engine: sa.Engine, email: str = ANN) -> AppUser:
    with session_scope(engine) as session:
        return session.exec(select(AppUser).where(AppUser.email == email)).one()


def audit(engine: sa.Engine, action: str) -> list[dict]:
    with session_scope(engine) as session:
        events = session.exec(select(AuditEvent).where(AuditEvent.action == action)).all()
        return [json.loads(event.detail) for event in events]


def set_user(engine: sa.Engine, email: str = ANN, **values) -> None:
    with session_scope(engine) as session:
        user = session.exec(select(AppUser).where(AppUser.email == email)).one()
        for name, value in values.items():
            setattr(user, name, value)
        session.add(user)


# --- adding users --------------------------------------------------------------------------


def test_add_user_keeps_a_lower_cased_email_and_only_an_argon2_hash(engine) -> None:
    user = add(engine, "  Ann@ACME.example ", Role.ADMIN)
    assert (user.email, user.role) == (ANN, Role.ADMIN)
    stored = stored_user(engine)
    assert stored.password_hash.startswith("$argon2id$")
    assert PASSWORD not in stored.password_hash
    assert HASHER.verify(stored.password_hash, PASSWORD)
    assert (stored.failed_logins, stored.locked_until, stored.disabled) == (0, None, False)
    [event] = audit(engine, "user_added")
    assert event == {"user_id": stored.id, "email": ANN, "role": "admin"}


def test_add_user_refuses_a_taken_email_a_short_password_a_bad_email_or_role(engine) -> None:
    add(engine)
    with pytest.raises(DuplicateUser, match="a user ann@acme.example already exists"):
        add(engine, "ANN@acme.example")
    with pytest.raises(InvalidUserInput, match="has 11 characters; it needs at least 12"):
        add(engine, "bob@acme.example", password="x" * 11)
    with pytest.raises(InvalidUserInput, match="'bob at acme' is not an email address"):
        add(engine, "bob at acme")
    with pytest.raises(InvalidUserInput, match="unknown role 'boss': choose one of viewer"):
        add(engine, "bob@acme.example", role="boss")
    with pytest.raises(InvalidUserInput, match="at most 128"):
        add(engine, "b" * 64 + "@" + "c" * 60 + ".example")
    assert add(engine, "bob@acme.example", password="x" * 12).role == Role.COLLECTOR
    with session_scope(engine) as session:
        assert sorted(session.exec(select(AppUser.email)).all()) == [ANN, "bob@acme.example"]
    assert len(audit(engine, "user_added")) == 2


def test_the_database_refuses_an_email_in_capitals_or_an_unknown_role(engine) -> None:
    for email, role in (("Zed@acme.example", "viewer"), ("zed@acme.example", "boss")):
        with pytest.raises(sa.exc.IntegrityError), session_scope(engine) as session:
            session.add(AppUser(email=email, password_hash="x", role=role))
            session.flush()


# --- logging in ----------------------------------------------------------------------------


def test_the_right_password_logs_in_whatever_the_case_of_the_email(engine) -> None:
    user = add(engine)
    assert login(engine, "Ann@Acme.Example ").id == user.id


def test_five_failures_lock_the_account_for_fifteen_minutes(engine) -> None:
    add(engine)
    for attempt in range(5):
        refusal(engine, password="wrong password!", now=NOW + timedelta(seconds=attempt))
    assert stored_user(engine).locked_until == NOW + timedelta(seconds=4, minutes=15)
    # Locked: the right password is refused too, and these attempts do not extend the lock.
    refusal(engine, now=NOW + timedelta(minutes=1))
    refusal(engine, now=NOW + timedelta(seconds=3, minutes=15))
    assert stored_user(engine).locked_until == NOW + timedelta(seconds=4, minutes=15)
    assert login(engine, now=NOW + timedelta(seconds=4, minutes=15)).email == ANN
    stored = stored_user(engine)
    assert (stored.failed_logins, stored.locked_until) == (0, None)
    [locked] = audit(engine, "user_locked")
    assert locked["email"] == ANN and PASSWORD not in json.dumps(locked)


def test_a_success_starts_the_count_of_failures_again(engine) -> None:
    add(engine)
    for _ in range(4):
        refusal(engine, password="wrong password!")
    assert stored_user(engine).failed_logins == 4
    login(engine)
    for _ in range(4):
        refusal(engine, password="wrong password!")
    assert login(engine).email == ANN
    assert audit(engine, "user_locked") == []


def test_every_refusal_says_the_same_words(engine) -> None:
    add(engine)
    add(engine, "totp@acme.example")
    with session_scope(engine) as session:
        enable_totp(session, "totp@acme.example")
    add(engine, "gone@acme.example")
    set_user(engine, "gone@acme.example", disabled=True)
    add(engine, "locked@acme.example")
    set_user(engine, "locked@acme.example", locked_until=NOW + timedelta(minutes=3))
    messages = {
        "unknown email": refusal(engine, "nobody@acme.example"),
        "not an email": refusal(engine, "nobody"),
        "wrong password": refusal(engine, password="wrong password!"),
        "empty password": refusal(engine, password=""),
        "no code": refusal(engine, "totp@acme.example"),
        "wrong code": refusal(engine, "totp@acme.example", code="000000"),
        "disabled": refusal(engine, "gone@acme.example"),
        "locked": refusal(engine, "locked@acme.example"),
    }
    assert set(messages.values()) == {LOGIN_REFUSED}
    assert "email" in LOGIN_REFUSED and "locked for 15 minutes" in LOGIN_REFUSED


def test_an_unknown_email_costs_a_password_verification_all_the_same(engine) -> None:
    add(engine)

    def fastest(email: str) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            refusal(engine, email, password="wrong password!")
            times.append(time.perf_counter() - start)
        return min(times)

    unknown, known = fastest("nobody@acme.example"), fastest(ANN)
    # Without the dummy verification an unknown email would answer in a few milliseconds,
    # a small fraction of the argon2 work a known one takes.
    assert unknown > 0.5 * known, (unknown, known)


def test_an_outdated_hash_is_replaced_at_the_next_login(engine) -> None:
    add(engine)
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    set_user(engine, password_hash=weak)
    login(engine)
    renewed = stored_user(engine).password_hash
    assert renewed != weak and not HASHER.check_needs_rehash(renewed)
    assert HASHER.verify(renewed, PASSWORD)


def test_a_one_time_code_is_needed_once_set_up_and_works_once(engine) -> None:
    add(engine)
    with session_scope(engine) as session:
        uri = enable_totp(session, ANN, issuer="Example Co")
    assert uri.startswith("otpauth://totp/Example%20Co:ann%40acme.example?")
    totp = pyotp.parse_uri(uri)
    assert stored_user(engine).totp_secret == totp.secret
    assert audit(engine, "totp_enabled") == [{"user_id": stored_user(engine).id, "email": ANN}]

    refusal(engine, code=None)
    refusal(engine, code="12345")
    refusal(engine, code=totp.at(NOW - timedelta(seconds=60)))  # two steps old: out of window
    refusal(engine, password="wrong password!", code=totp.at(NOW))
    assert login(engine, code=totp.at(NOW)).email == ANN
    refusal(engine, code=totp.at(NOW))  # the same code again: refused
    later = NOW + timedelta(seconds=30)
    refusal(engine, code=totp.at(NOW - timedelta(seconds=30)), now=later)  # older than the last
    assert login(engine, code=" ".join([totp.at(later)[:3], totp.at(later)[3:]]), now=later)


def test_pyotps_current_code_logs_in_by_the_real_clock(engine) -> None:
    add(engine)
    with session_scope(engine) as session:
        totp = pyotp.parse_uri(enable_totp(session, ANN))
    assert login(engine, code=totp.now(), now=datetime.now(UTC)).email == ANN


# --- API keys ------------------------------------------------------------------------------


def test_an_api_key_is_shown_once_and_kept_as_a_hash(engine) -> None:
    user = add(engine)
    with session_scope(engine) as session:
        key = create_api_key(session, ANN)
    prefix, secret = key.removeprefix("dw_").split("_")
    assert len(prefix) == 8 and len(secret) == 64
    with session_scope(engine) as session:
        [stored] = session.exec(select(ApiKey)).all()
    assert stored.prefix == prefix
    assert stored.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert (stored.user_id, stored.last_used_at, stored.revoked) == (user.id, None, False)
    [event] = audit(engine, "api_key_created")
    assert event == {"user_id": user.id, "email": ANN, "prefix": prefix}

    with session_scope(engine) as session:
        assert user_for_api_key(session, key, now=NOW).id == user.id
    with session_scope(engine) as session:
        assert session.get(ApiKey, stored.id).last_used_at == NOW
    with session_scope(engine) as session:
        wrong = f"dw_{prefix}_{'0' * 64}"
        for bad in (wrong, key[:-1], key + "0", key.upper(), "", "dw__", f"Bearer {key}"):
            assert user_for_api_key(session, bad) is None, bad


def test_a_revoked_key_or_a_disabled_user_is_refused(engine) -> None:
    add(engine)
    with session_scope(engine) as session:
        first, second = create_api_key(session, ANN), create_api_key(session, ANN)
    with session_scope(engine) as session:
        [revoked] = revoke_api_key(session, first[:11])
    assert revoked.revoked and first.startswith(f"dw_{revoked.prefix}_")
    with session_scope(engine) as session:
        assert user_for_api_key(session, first) is None
        assert user_for_api_key(session, second).email == ANN
    assert len(audit(engine, "api_key_revoked")) == 1
    set_user(engine, disabled=True)
    with session_scope(engine) as session:
        assert user_for_api_key(session, second) is None
        with pytest.raises(UserError, match="is disabled"):
            create_api_key(session, ANN)
        with pytest.raises(UnknownUser, match="no user 'nobody@acme.example'"):
            create_api_key(session, "nobody@acme.example")
        with pytest.raises(UserError, match="no API key starting dw_00000000"):
            revoke_api_key(session, "dw_00000000")
        with pytest.raises(UserError, match="is not an API key"):
            revoke_api_key(session, "dw_xyz")


# --- console sessions ----------------------------------------------------------------------


def test_a_session_lasts_twelve_hours_or_until_logout(engine) -> None:
    ann, bob = add(engine), add(engine, "bob@acme.example")
    with session_scope(engine) as session:
        cookie, csrf = open_session(session, ann, NOW)
        bobs_cookie, _ = open_session(session, bob, NOW)
    with session_scope(engine) as session:
        stored = session.exec(select(ConsoleSession).where(ConsoleSession.user_id == ann.id)).one()
        assert stored.token_hash == hashlib.sha256(cookie.encode()).hexdigest()
        assert stored.expires_at == NOW + timedelta(hours=12)
        user, token = session_user(session, cookie, NOW + timedelta(hours=11, minutes=59))
        assert (user.id, token) == (ann.id, csrf)
        assert session_user(session, cookie, NOW + timedelta(hours=12)) is None
        assert session_user(session, cookie[:-1], NOW) is None
        assert session_user(session, None, NOW) is None
        close_session(session, cookie)
    with session_scope(engine) as session:
        assert session_user(session, cookie, NOW) is None
        assert session_user(session, bobs_cookie, NOW)[0].id == bob.id
    set_user(engine, "bob@acme.example", disabled=True)
    with session_scope(engine) as session:
        assert session_user(session, bobs_cookie, NOW) is None


def test_a_new_session_clears_every_expired_one(engine) -> None:
    """Bob never logs in again: Ann's next login clears his expired session too."""
    ann = add(engine)
    bob = add(engine, "bob@acme.example")
    with session_scope(engine) as session:
        open_session(session, ann, NOW)
        open_session(session, bob, NOW + timedelta(minutes=10))
        open_session(session, ann, NOW + timedelta(hours=1))
    with session_scope(engine) as session:
        open_session(session, ann, NOW + timedelta(hours=12, minutes=30))
    with session_scope(engine) as session:
        created = session.exec(select(ConsoleSession.created_at)).all()
    assert sorted(created) == [NOW + timedelta(hours=1), NOW + timedelta(hours=12, minutes=30)]


# --- the commands --------------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path / "data", database_url=None)


def user_add(settings: Settings, monkeypatch, stdin: str, email=ANN, role="collector") -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    user_command(settings, argparse.Namespace(action="add", email=email, role=role))


def test_user_add_reads_the_password_from_standard_input(settings, monkeypatch, capsys) -> None:
    user_add(settings, monkeypatch, f"{PASSWORD}\r\nthe rest is ignored\n", "Ann@Acme.example")
    assert capsys.readouterr().out == f"added {ANN} as collector\n"
    engine = make_engine(settings.effective_database_url)
    try:
        assert login(engine).role == Role.COLLECTOR
    finally:
        engine.dispose()


def test_user_add_refuses_clearly(settings, monkeypatch) -> None:
    user_add(settings, monkeypatch, PASSWORD)
    cases = [
        (dict(stdin=PASSWORD), "a user ann@acme.example already exists"),
        (dict(stdin=PASSWORD, role="boss"), "unknown role 'boss': choose one of viewer"),
        (dict(stdin="short\n", email="bob@acme.example"), "it needs at least 12"),
        (dict(stdin="", email="bob@acme.example"), "no password on standard input"),
        (dict(stdin=PASSWORD, email="bob"), "'bob' is not an email address"),
    ]
    for given, words in cases:
        with pytest.raises(CommandError, match=words):
            user_add(settings, monkeypatch, **given)


def test_apikey_create_prints_a_key_that_works_and_revoke_ends_it(
    settings, monkeypatch, capsys
) -> None:
    user_add(settings, monkeypatch, PASSWORD)
    capsys.readouterr()
    apikey_command(settings, argparse.Namespace(action="create", email="ANN@acme.example"))
    printed = capsys.readouterr()
    key = printed.out.strip()
    assert "not shown again" in printed.err
    engine = make_engine(settings.effective_database_url)
    try:
        with session_scope(engine) as session:
            assert user_for_api_key(session, key).email == ANN
        apikey_command(settings, argparse.Namespace(action="revoke", key=key))
        assert capsys.readouterr().out == f"revoked the API key starting {key[:11]}\n"
        with session_scope(engine) as session:
            assert user_for_api_key(session, key) is None
    finally:
        engine.dispose()
    with pytest.raises(CommandError, match="no user 'nobody@acme.example' in the ledger"):
        apikey_command(settings, argparse.Namespace(action="create", email="nobody@acme.example"))


def test_user_totp_prints_a_uri_whose_codes_log_in(settings, monkeypatch, capsys) -> None:
    user_add(settings, monkeypatch, PASSWORD)
    capsys.readouterr()
    user_command(settings, argparse.Namespace(action="totp", email=ANN))
    uri = capsys.readouterr().out.strip()
    totp = pyotp.parse_uri(uri)
    assert totp.issuer == settings.company_name
    engine = make_engine(settings.effective_database_url)
    try:
        refusal(engine)
        assert login(engine, code=totp.at(NOW)).email == ANN
    finally:
        engine.dispose()
    with pytest.raises(CommandError, match="no user 'nobody@acme.example'"):
        user_command(settings, argparse.Namespace(action="totp", email="nobody@acme.example"))


def _at_a_terminal(settings: Settings, answers: list[str]) -> tuple[int, str]:
    """`user add` in a child process whose terminal is a real pseudo-terminal: type each
    answer at each prompt; (exit status, everything the terminal showed)."""
    script = (
        "import argparse, sys\n"
        "from commands.errors import CommandError\n"
        "from commands.users import user_command\n"
        "from settings import Settings\n"
        f"settings = Settings(_env_file=None, data_dir={str(settings.data_dir)!r}, "
        "database_url=None)\n"
        "try:\n"
        "    user_command(settings, argparse.Namespace(action='add', "
        f"email={ANN!r}, role='viewer'))\n"
        "except CommandError as err:\n"
        "    print('refused:', err)\n"
        "    sys.exit(1)\n"
    )
    pid, terminal = pty.fork()
    if pid == 0:  # the child: become the command
        os.chdir(ROOT)
        os.execv(sys.executable, [sys.executable, "-c", script])
    shown = since_answer = b""
    pending = list(answers)
    while True:
        try:
            chunk = os.read(terminal, 1024)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
        since_answer += chunk
        # Answer only once the prompt is out: getpass turns echo off and flushes typed-ahead
        # input before it prompts.
        if pending and since_answer.endswith(b": "):
            os.write(terminal, pending.pop(0).encode() + b"\n")
            since_answer = b""
    _, status = os.waitpid(pid, 0)
    os.close(terminal)
    return os.waitstatus_to_exitcode(status), shown.decode(errors="replace")


def test_user_add_at_a_terminal_asks_twice_without_echo(settings) -> None:
    status, shown = _at_a_terminal(settings, [PASSWORD, PASSWORD + "!"])
    assert status == 1 and "refused: the two passwords differ" in shown, shown
    status, shown = _at_a_terminal(settings, [PASSWORD, PASSWORD])
    assert status == 0 and f"added {ANN} as viewer" in shown, shown
    assert "Password (at least 12 characters):" in shown and "The same password again:" in shown
    assert PASSWORD not in shown  # never echoed
    engine = make_engine(settings.effective_database_url)
    try:
        assert login(engine).role == Role.VIEWER
    finally:
        engine.dispose()
