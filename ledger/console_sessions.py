"""Console login sessions: opened at login, looked up by cookie on each request, closed at
logout.

Invariants:

- The cookie value is never stored, only its SHA-256 (`ledger.users.secret_digest`); it
  carries 32 random bytes, so a fast hash is enough. The CSRF token for the session's forms
  is stored as is.
- A session ends `SESSION_LIFETIME` after login, or at logout; a disabled user's sessions
  are refused. Expired sessions, anyone's, are deleted whenever someone logs in, so the
  table holds about as many rows as there are live sessions.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, select

from ledger.models import AppUser, ConsoleSession
from ledger.users import secret_digest

SESSION_LIFETIME = timedelta(hours=12)


def open_session(session: Session, user: AppUser, now: datetime) -> tuple[str, str]:
    """A new console session: (cookie value, CSRF token for its forms). Every expired
    session is cleared on the way."""
    cookie_value = secrets.token_urlsafe(32)
    csrf_token = secrets.token_urlsafe(32)
    session.exec(sa.delete(ConsoleSession).where(ConsoleSession.expires_at <= now))
    session.add(
        ConsoleSession(
            token_hash=secret_digest(cookie_value),
            user_id=user.id,
            csrf_token=csrf_token,
            created_at=now,
            expires_at=now + SESSION_LIFETIME,
        )
    )
    session.flush()
    return cookie_value, csrf_token


def session_user(
    session: Session, cookie_value: str | None, now: datetime
) -> tuple[AppUser, str] | None:
    """(user, CSRF token) of a live session; None when unknown, expired or the user disabled."""
    if not cookie_value:
        return None
    row = session.exec(
        select(ConsoleSession).where(ConsoleSession.token_hash == secret_digest(cookie_value))
    ).first()
    if row is None or now >= row.expires_at:
        return None
    user = session.get(AppUser, row.user_id)
    if user is None or user.disabled:
        return None
    return user, row.csrf_token


def close_session(session: Session, cookie_value: str | None) -> None:
    """End the session of this cookie (logout); nothing happens for an unknown one."""
    if cookie_value:
        session.exec(
            sa.delete(ConsoleSession).where(
                ConsoleSession.token_hash == secret_digest(cookie_value)
            )
        )
