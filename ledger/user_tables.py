"""Ledger tables of console users: who logs in, with what role, their API keys and sessions.

No secret is stored: a password only as its argon2 hash, an API key and a session cookie only
as the SHA-256 of the whole value, and secrets and hashes stay out of `repr` (and so out of
logs). Emails are stored lower-cased and the role is one the console knows; the database
checks both.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from ledger.columns import aware, utcnow


class Role(StrEnum):
    """What a console user may see and do; each role may do all the one before it may."""

    VIEWER = "viewer"  # sees cases, tasks and the audit trail
    COLLECTOR = "collector"  # works tasks: notes, promises, disputes, plans, pauses
    ADMIN = "admin"  # finance admin: write-offs, users

    def includes(self, needed: Role) -> bool:
        """Whether this role may do what `needed` may."""
        order = list(Role)
        return order.index(self) >= order.index(needed)


class AppUser(SQLModel, table=True):
    """Someone who logs in to the console or calls the API: email (lower-cased), role, and the
    password only as an argon2 hash. `failed_logins` counts failures since the last success or
    lock; `totp_last_step` is the last one-time-code time step accepted, never accepted twice.
    Secrets and hashes stay out of `repr`, and so out of logs."""

    __tablename__ = "app_user"
    __table_args__ = (
        sa.CheckConstraint("email = lower(email)", name="email_lower_case"),
        sa.CheckConstraint("role IN ('viewer', 'collector', 'admin')", name="role_known"),
        sa.CheckConstraint("failed_logins >= 0", name="failed_logins_not_negative"),
    )

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=320, unique=True)
    password_hash: str = Field(max_length=200, repr=False)
    role: Role = Field(sa_type=sa.String(16))
    totp_secret: str | None = Field(default=None, max_length=64, repr=False)
    totp_last_step: int | None = Field(default=None, sa_type=sa.BigInteger)
    failed_logins: int = 0
    locked_until: datetime | None = aware(default=None)
    created_at: datetime = aware(default_factory=utcnow)
    disabled: bool = False


class ApiKey(SQLModel, table=True):
    """An API key of one user, kept only as the SHA-256 of the whole key; `prefix` finds it."""

    __tablename__ = "api_key"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="app_user.id", index=True)
    prefix: str = Field(max_length=8, index=True)
    key_hash: str = Field(max_length=64, unique=True, repr=False, description="SHA-256, hex")
    created_at: datetime = aware(default_factory=utcnow)
    last_used_at: datetime | None = aware(default=None)
    revoked: bool = False


class ConsoleSession(SQLModel, table=True):
    """A logged-in console browser: the SHA-256 of its cookie and the CSRF token of its forms."""

    __tablename__ = "console_session"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True, repr=False, description="SHA-256, hex")
    user_id: int = Field(foreign_key="app_user.id", index=True)
    csrf_token: str = Field(max_length=64, repr=False)
    created_at: datetime = aware(default_factory=utcnow)
    expires_at: datetime = aware()
