"""An outgoing email as MIME: the bytes of an .eml file, or what SMTP sends.

Invariants:
- Every attempt of one message has the same Message-ID (from its idempotency key), so a
  receiving server can drop a duplicate.
- A header value never holds a line break: it is refused, not folded into a new header.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from email.charset import QP, Charset
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import Compat32
from email.utils import format_datetime, formataddr

from pydantic import BaseModel

from settings import Settings

IDEMPOTENCY_HEADER = "X-Dunwise-Idempotency-Key"


class OutgoingEmail(BaseModel):
    to: str
    subject: str
    text: str
    html: str | None = None
    idempotency_key: str
    unsubscribe_link: str | None = None


def message_id_for(idempotency_key: str, sender: str) -> str:
    """The same Message-ID for every attempt of one message."""
    domain = sender.rsplit("@", 1)[-1] or "dunwise.invalid"
    return f"<{_key_digest(idempotency_key)[:32]}@{domain}>"


def _key_digest(idempotency_key: str) -> str:
    return hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()


# Headers fold at RFC 5322's hard limit: folded at 78, a long List-Unsubscribe URL (which
# has no spaces) would be RFC 2047-encoded, and mail clients could not read the link. The
# compat32 classes build a message in a fifth of the time the header registry takes; their
# one gap, a header value with a line break, is refused below.
class _HeaderPolicy(Compat32):
    """compat32, but a header of printable ASCII that fits on its line is written as it is:
    folding it would change nothing, and folding is most of the time spent writing a message."""

    def fold_binary(self, name: str, value: str) -> bytes:
        line = f"{name}: {value}"
        fits = len(line) <= (self.max_line_length or len(line))
        if isinstance(value, str) and line.isascii() and line.isprintable() and fits:
            return (line + self.linesep).encode("ascii")
        return super().fold_binary(name, value)


HEADER_POLICY = _HeaderPolicy(max_line_length=998)
BODY_CHARSET = Charset("utf-8")
BODY_CHARSET.body_encoding = QP  # readable in the .eml, safe for any line length


def build_email_message(
    settings: Settings, email: OutgoingEmail, now: datetime | None = None
) -> Message:
    headers = {
        "From": formataddr((settings.company_name, settings.email_from)),
        "To": email.to,
        "Subject": email.subject,
        "Date": format_datetime(now or datetime.now(UTC)),
        "Message-ID": message_id_for(email.idempotency_key, settings.email_from),
        IDEMPOTENCY_HEADER: email.idempotency_key,
    }
    if email.unsubscribe_link:
        headers["List-Unsubscribe"] = f"<{email.unsubscribe_link}>"
        # RFC 8058: mail clients may unsubscribe with one POST to that link.
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    text = MIMEText(email.text, "plain", BODY_CHARSET)
    if email.html is None:
        message: Message = text
    else:
        # A boundary of the key's own: "=_" never occurs in a quoted-printable body, so the
        # generator need not search both bodies for a random one that does not.
        boundary = f"=_dunwise_{_key_digest(email.idempotency_key)[:24]}"
        message = MIMEMultipart("alternative", boundary=boundary, policy=HEADER_POLICY)
        message.attach(text)
        message.attach(MIMEText(email.html, "html", BODY_CHARSET))
    message.policy = HEADER_POLICY
    for name, value in headers.items():
        if "\r" in value or "\n" in value:
            raise ValueError(f"email header {name} may not contain a line break: {value!r}")
        message[name] = value
    return message
