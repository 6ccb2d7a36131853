"""Console users: passwords and one-time codes. Their login sessions are
`ledger.console_sessions`, their API keys `ledger.api_keys`.

Invariants:

- No secret is stored: a password only as its argon2 hash; an API key and a session cookie
  only as the SHA-256 of the whole value (each carries 32 random bytes, so a fast hash is
  enough). No secret goes into an audit event.
- Emails are validated, stored lower-cased, and name one user each.
- `authenticate` refuses every failure (unknown email, wrong password, missing or wrong code,
  locked or disabled account) with the one message of `LoginRefused`, and spends one argon2
  verification whether the email is known or not, so neither words nor timing tell which
  accounts exist.
- `MAX_FAILED_LOGINS` failures in a row lock an account for `LOCKOUT`; a success resets the
  count. A counted failure is committed before `LoginRefused` is raised, so it stands even
  though the caller's transaction rolls back on the exception. Attempts on a locked account
  are refused, whatever the password, and are not counted.
- A one-time code is accepted for its time step at most once: a code seen on the wire cannot
  log in again.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta
from functools import cache

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from email_validator import EmailNotValidError, validate_email
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from ledger.books import record_audit
from ledger.models import AppUser, Role

HASHER = PasswordHasher()  # argon2id with the library's default (recommended) parameters
MIN_PASSWORD = 12
MAX_PASSWORD = 1024
# An AppUser's email names them in audit events and collectors' notes (128 characters).
MAX_EMAIL = 128
MAX_FAILED_LOGINS = 5
LOCKOUT = timedelta(minutes=15)
TOTP_WINDOW = 1  # steps (of 30 s) accepted either side of now, for clocks a little apart
LOGIN_REFUSED = (
    "Sign-in failed: check the email, password and code. "
    f"After {MAX_FAILED_LOGINS} failed attempts an account is locked for "
    f"{int(LOCKOUT.total_seconds() // 60)} minutes."
)


class UserError(ValueError):
    """A user-management request the ledger refuses; the message names the user and problem."""


class UnknownUser(UserError):
    pass


class DuplicateUser(UserError):
    pass


class InvalidUserInput(UserError):
    """A bad email, password or role."""


class LoginRefused(Exception):
    """Any failed login, always with the same message (`LOGIN_REFUSED`)."""

    def __init__(self) -> None:
        super().__init__(LOGIN_REFUSED)


# --- users ---------------------------------------------------------------------------------


def normalize_email(email: str) -> str:
    """The address as stored: validated (no DNS lookup) and lower-cased."""
    try:
        normalized = validate_email(email.strip(), check_deliverability=False).normalized
    except EmailNotValidError as err:
        raise InvalidUserInput(f"{email!r} is not an email address: {err}") from None
    if len(normalized) > MAX_EMAIL:
        raise InvalidUserInput(
            f"the email address is {len(normalized)} characters long; at most {MAX_EMAIL}"
        )
    return normalized.lower()


def parse_role(role: str | Role) -> Role:
    try:
        return Role(role)
    except ValueError:
        choices = ", ".join(r.value for r in Role)
        raise InvalidUserInput(f"unknown role {role!r}: choose one of {choices}") from None


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidUserInput(
            f"the password has {len(password)} characters; it needs at least {MIN_PASSWORD}"
        )
    if len(password) > MAX_PASSWORD:
        raise InvalidUserInput(f"the password is longer than {MAX_PASSWORD} characters")


def find_user(session: Session, email: str) -> AppUser | None:
    return session.exec(select(AppUser).where(AppUser.email == _lookup_key(email))).first()


def add_user(
    session: Session, email: str, password: str, role: str | Role, *, actor: str = "operator"
) -> AppUser:
    """A new user; refused for a bad email, a short password, an unknown role or a taken email."""
    address = normalize_email(email)
    check_password(password)
    user_role = parse_role(role)
    if find_user(session, address) is not None:
        raise DuplicateUser(f"a user {address} already exists")
    user = AppUser(email=address, password_hash=HASHER.hash(password), role=user_role)
    try:
        # A concurrent add of the same email loses here, on the unique key.
        with session.begin_nested():
            session.add(user)
    except IntegrityError:
        raise DuplicateUser(f"a user {address} already exists") from None
    record_audit(
        session,
        actor,
        "user_added",
        None,
        {"user_id": user.id, "email": address, "role": user_role.value},
    )
    return user


def enable_totp(
    session: Session, email: str, *, issuer: str = "dunwise", actor: str = "operator"
) -> str:
    """Give the user a new one-time-code secret (replacing any earlier one); the provisioning
    URI (`otpauth://...`) an authenticator app scans. From now on logging in needs a code."""
    user = user_named(session, email)
    secret = pyotp.random_base32()
    user.totp_secret = secret
    user.totp_last_step = None
    session.add(user)
    record_audit(session, actor, "totp_enabled", None, {"user_id": user.id, "email": user.email})
    return pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=issuer)


# --- logging in ----------------------------------------------------------------------------


def authenticate(
    session: Session, email: str, password: str, totp_code: str | None, now: datetime
) -> AppUser:
    """The user these credentials log in; `LoginRefused` (one message) for any failure."""
    user = session.exec(
        select(AppUser)
        .where(AppUser.email == _lookup_key(email))
        .with_for_update()  # parallel guesses queue up, so none escapes the count
        .execution_options(populate_existing=True)
    ).first()
    # Always one verification, against a dummy hash for an unknown email: same time either way.
    password_ok = _verify(user.password_hash if user else _dummy_hash(), password)
    if user is None or user.disabled:
        raise LoginRefused()
    if user.locked_until is not None and now < user.locked_until:
        raise LoginRefused()
    if not (password_ok and _code_accepted(user, totp_code, now)):
        _count_failure(session, user, now)
        raise LoginRefused()
    user.failed_logins = 0
    user.locked_until = None
    if HASHER.check_needs_rehash(user.password_hash):
        user.password_hash = HASHER.hash(password)
    session.add(user)
    return user


def _lookup_key(email: str) -> str:
    try:
        return normalize_email(email)
    except InvalidUserInput:
        return email.strip().lower()


@cache
def _dummy_hash() -> str:
    return HASHER.hash(secrets.token_hex(16))


def _verify(password_hash: str, password: str) -> bool:
    try:
        return HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _code_accepted(user: AppUser, code: str | None, now: datetime) -> bool:
    """No secret: no code needed. Otherwise pyotp's `verify(code, valid_window=TOTP_WINDOW)`,
    plus: the matching time step must be later than the last one accepted (no replay)."""
    if user.totp_secret is None:
        return True
    code = (code or "").replace(" ", "")
    if not re.fullmatch(r"[0-9]{6}", code):
        return False
    totp = pyotp.TOTP(user.totp_secret)
    current = totp.timecode(now)
    for step in range(current - TOTP_WINDOW, current + TOTP_WINDOW + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            if user.totp_last_step is not None and step <= user.totp_last_step:
                return False
            user.totp_last_step = step
            return True
    return False


def _count_failure(session: Session, user: AppUser, now: datetime) -> None:
    user.failed_logins += 1
    if user.failed_logins >= MAX_FAILED_LOGINS:
        user.failed_logins = 0
        user.locked_until = now + LOCKOUT
        record_audit(
            session,
            "login",
            "user_locked",
            None,
            {"user_id": user.id, "email": user.email, "until": user.locked_until.isoformat()},
        )
    session.add(user)
    session.commit()


def secret_digest(value: str) -> str:
    """How an API key or a session cookie is kept: the SHA-256 of the whole value."""
    return hashlib.sha256(value.encode()).hexdigest()


def user_named(session: Session, email: str) -> AppUser:
    user = find_user(session, email)
    if user is None:
        raise UnknownUser(f"no user {email.strip()!r} in the ledger")
    return user
