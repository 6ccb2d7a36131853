"""Console users' API keys, `dw_<prefix>_<secret>`, for the JSON API.

Invariants: a key is shown once, when created, and stored only as the SHA-256 of the whole
value (`users.secret_digest`); it is found by its 8-character prefix and compared in constant
time. A revoked key, or one of a disabled user, lets no one in. Creating and revoking keys
are audited, without the secret.
"""

from __future__ import annotations

import hmac
import re
import secrets
from datetime import datetime, timedelta

from sqlmodel import Session, select

from ledger.books import record_audit
from ledger.models import ApiKey, AppUser, utcnow
from ledger.users import UserError, secret_digest, user_named

# Writing `last_used_at` on every API call would make each call a write; once a minute will do.
LAST_USED_PRECISION = timedelta(minutes=1)
API_KEY_PATTERN = re.compile(r"dw_([0-9a-f]{8})_[0-9a-f]{64}")


def create_api_key(session: Session, email: str, *, actor: str = "operator") -> str:
    """A new key for the user, `dw_<prefix>_<secret>`: returned once, kept only as a hash."""
    user = user_named(session, email)
    if user.disabled:
        raise UserError(f"user {user.email} is disabled: no new API keys for them")
    prefix = secrets.token_hex(4)
    key = f"dw_{prefix}_{secrets.token_hex(32)}"
    session.add(ApiKey(user_id=user.id, prefix=prefix, key_hash=secret_digest(key)))
    session.flush()
    record_audit(
        session,
        actor,
        "api_key_created",
        None,
        {"user_id": user.id, "email": user.email, "prefix": prefix},
    )
    return key


def user_for_api_key(session: Session, key: str, *, now: datetime | None = None) -> AppUser | None:
    """The user of a valid key; None for a malformed, unknown or revoked key or a disabled user."""
    match = API_KEY_PATTERN.fullmatch(key)
    if match is None:
        return None
    digest = secret_digest(key)
    for api_key in session.exec(select(ApiKey).where(ApiKey.prefix == match[1])):
        if hmac.compare_digest(api_key.key_hash, digest):
            break
    else:
        return None
    user = session.get(AppUser, api_key.user_id)
    if api_key.revoked or user is None or user.disabled:
        return None
    moment = now or utcnow()
    if api_key.last_used_at is None or moment - api_key.last_used_at >= LAST_USED_PRECISION:
        api_key.last_used_at = moment
        session.add(api_key)
    return user


def revoke_api_key(
    session: Session, key_or_prefix: str, *, actor: str = "operator"
) -> list[ApiKey]:
    """Revoke the key given whole, as `dw_<prefix>`, or by its 8-character prefix (every key
    with that prefix); the keys revoked."""
    prefix = key_or_prefix.strip().removeprefix("dw_")[:8]
    if not re.fullmatch(r"[0-9a-f]{8}", prefix):
        raise UserError(f"{key_or_prefix!r} is not an API key or the 8-character prefix of one")
    keys = session.exec(select(ApiKey).where(ApiKey.prefix == prefix)).all()
    if not keys:
        raise UserError(f"no API key starting dw_{prefix}")
    for api_key in keys:
        api_key.revoked = True
        session.add(api_key)
        record_audit(
            session,
            actor,
            "api_key_revoked",
            None,
            {"user_id": api_key.user_id, "prefix": prefix, "api_key_id": api_key.id},
        )
    return list(keys)
