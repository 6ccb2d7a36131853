"""Hand a rendered message to a channel: outbox files by default, SendGrid, SMTP or Twilio.

Every channel is idempotent by the message's idempotency key where the provider allows:
the outbox channels write at most one file or line per key; SMTP keeps one Message-ID per
key so receiving servers can drop a duplicate. SendGrid's mail API and Twilio's Messages
API take no idempotency key, so a retry after a crash between the provider's acceptance
and our "sent" mark can deliver twice; the ledger's Message row keeps that window small.
"""

from __future__ import annotations

import hashlib
import re
import smtplib
import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TypeVar

from pydantic import BaseModel
from python_http_client.exceptions import HTTPError as SendGridHTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import CustomArg, Email, Header, Mail, To
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client as TwilioClient

from activities.email_message import IDEMPOTENCY_HEADER, OutgoingEmail, build_email_message
from activities.files import append_json_line_once, write_atomically
from settings import Settings

# Provider answers that mean "this message will never be accepted"; anything else is retried.
PERMANENT_HTTP_STATUSES = frozenset({400, 413, 422})


class OutgoingSms(BaseModel):
    to: str
    body: str
    idempotency_key: str


class Delivered(BaseModel):
    provider_id: str | None = None  # outbox file name, SMTP Message-ID, SendGrid or Twilio id


class PermanentDeliveryError(Exception):
    """The provider refused this message for good (bad address, rejected content)."""


class RecipientOptedOut(PermanentDeliveryError):
    """The recipient unsubscribed at the provider (an SMS reply of STOP): never send again."""


# Twilio's "Attempt to send to unsubscribed recipient": the number replied STOP.
TWILIO_UNSUBSCRIBED = 21610


MessageT = TypeVar("MessageT", contravariant=True)


class Channel(Protocol[MessageT]):
    def deliver(self, message: MessageT) -> Delivered: ...


def outbox_file_stem(idempotency_key: str) -> str:
    """A safe file name for a key; the hash keeps keys that sanitize alike apart."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", idempotency_key).strip("._")[:120]
    digest = hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:12]
    return f"{readable}-{digest}" if readable else digest


class OutboxEmail:
    """Writes each email as an .eml file in {outbox}/email/, named after its key."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.folder = settings.effective_outbox_dir / "email"

    def path_for(self, idempotency_key: str) -> Path:
        return self.folder / f"{outbox_file_stem(idempotency_key)}.eml"

    def deliver(self, message: OutgoingEmail) -> Delivered:
        path = self.path_for(message.idempotency_key)
        if not path.exists():  # a retry finds the file and sends nothing more
            email = build_email_message(self._settings, message).as_bytes()
            write_atomically(path, email, durable=self._settings.durable_writes)
        return Delivered(provider_id=path.name)


class OutboxSms:
    """Appends each SMS as one JSON line to {outbox}/sms.jsonl, once per key."""

    def __init__(self, settings: Settings) -> None:
        self.path = settings.effective_outbox_dir / "sms.jsonl"
        self.durable = settings.durable_writes

    def deliver(self, message: OutgoingSms) -> Delivered:
        record = {
            "to": message.to,
            "body": message.body,
            "idempotency_key": message.idempotency_key,
            "at": datetime.now(UTC).isoformat(),
        }
        append_json_line_once(self.path, record, key_field="idempotency_key", durable=self.durable)
        return Delivered(provider_id=None)


class SmtpEmail:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def deliver(self, message: OutgoingEmail) -> Delivered:
        settings = self._settings
        email = build_email_message(settings, message)
        try:
            with smtplib.SMTP(
                settings.smtp_host, settings.smtp_port, timeout=settings.delivery_timeout_seconds
            ) as smtp:
                if settings.smtp_starttls:
                    smtp.starttls(context=ssl.create_default_context(cafile=settings.smtp_ca_file))
                if settings.smtp_username:
                    password = (
                        settings.smtp_password.get_secret_value() if settings.smtp_password else ""
                    )
                    smtp.login(settings.smtp_username, password)
                smtp.send_message(email)
        except smtplib.SMTPRecipientsRefused as refused:
            codes = [code for code, _ in refused.recipients.values()]
            if codes and all(code >= 500 for code in codes):
                raise PermanentDeliveryError(f"SMTP server refused {message.to}: {codes}") from None
            raise
        except smtplib.SMTPDataError as rejected:
            if rejected.smtp_code >= 500:
                raise PermanentDeliveryError(
                    f"SMTP server rejected the message: {rejected.smtp_code} "
                    f"{rejected.smtp_error.decode('utf-8', 'replace')}"
                ) from None
            raise
        return Delivered(provider_id=email["Message-ID"])


class SendGridEmail:
    def __init__(self, settings: Settings) -> None:
        if settings.sendgrid_api_key is None:
            raise ValueError("DUNWISE_SENDGRID_API_KEY is required when email_backend is sendgrid")
        self._settings = settings
        self._client = SendGridAPIClient(
            api_key=settings.sendgrid_api_key.get_secret_value(),
            host=settings.sendgrid_host.rstrip("/"),
        )
        self._client.client.timeout = settings.delivery_timeout_seconds

    def deliver(self, message: OutgoingEmail) -> Delivered:
        mail = Mail(
            from_email=Email(self._settings.email_from, self._settings.company_name),
            to_emails=To(message.to),
            subject=message.subject,
            plain_text_content=message.text,
            html_content=message.html,
        )
        mail.header = Header(IDEMPOTENCY_HEADER, message.idempotency_key)
        if message.unsubscribe_link:
            mail.header = Header("List-Unsubscribe", f"<{message.unsubscribe_link}>")
            mail.header = Header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
        # Comes back on SendGrid's event webhook, so events map to our Message row.
        mail.custom_arg = CustomArg("dunwise_idempotency_key", message.idempotency_key)
        try:
            response = self._client.send(mail)
        except SendGridHTTPError as error:
            if error.status_code in PERMANENT_HTTP_STATUSES:
                raise PermanentDeliveryError(
                    f"SendGrid refused the message: {error.status_code} {_text(error.body)}"
                ) from None
            raise RuntimeError(
                f"SendGrid answered {error.status_code}: {_text(error.body)}"
            ) from None
        return Delivered(provider_id=response.headers.get("X-Message-Id"))


class TwilioSms:
    def __init__(self, settings: Settings) -> None:
        if not (
            settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_from
        ):
            raise ValueError(
                "DUNWISE_TWILIO_ACCOUNT_SID, DUNWISE_TWILIO_AUTH_TOKEN and DUNWISE_TWILIO_FROM "
                "are required when sms_backend is twilio"
            )
        self._sender = settings.twilio_from
        # Twilio posts each status change here (portal.twilio_webhooks).
        self._status_callback = f"{settings.public_base_url.rstrip('/')}/webhooks/twilio/status"
        self._client = TwilioClient(
            settings.twilio_account_sid,
            settings.twilio_auth_token.get_secret_value(),
            http_client=TwilioHttpClient(timeout=settings.delivery_timeout_seconds),
        )
        if settings.twilio_base_url:
            self._client.api.base_url = settings.twilio_base_url.rstrip("/")

    def deliver(self, message: OutgoingSms) -> Delivered:
        sender = (
            {"messaging_service_sid": self._sender}
            if self._sender.startswith("MG")
            else {"from_": self._sender}
        )
        try:
            created = self._client.messages.create(
                to=message.to, body=message.body, status_callback=self._status_callback, **sender
            )
        except TwilioRestException as error:
            if error.code == TWILIO_UNSUBSCRIBED:
                raise RecipientOptedOut(
                    f"Twilio: {message.to} replied STOP (code {error.code}): {error.msg}"
                ) from None
            if error.status in PERMANENT_HTTP_STATUSES:
                raise PermanentDeliveryError(
                    f"Twilio refused the message: {error.status} code {error.code}: {error.msg}"
                ) from None
            raise RuntimeError(
                f"Twilio answered {error.status} code {error.code}: {error.msg}"
            ) from None
        return Delivered(provider_id=created.sid)


class Unkept:
    """Takes every message and keeps it nowhere: a simulation's channel when nobody asked to
    keep its rendered messages. No setting selects it, so no configuration can make a real
    reminder vanish."""

    def deliver(self, message: OutgoingEmail | OutgoingSms) -> Delivered:
        return Delivered()


def _text(body: bytes | str | None) -> str:
    if body is None:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return text[:500]


def email_channel(settings: Settings) -> Channel[OutgoingEmail]:
    if settings.email_backend == "sendgrid":
        return SendGridEmail(settings)
    if settings.email_backend == "smtp":
        return SmtpEmail(settings)
    return OutboxEmail(settings)


def sms_channel(settings: Settings) -> Channel[OutgoingSms]:
    if settings.sms_backend == "twilio":
        return TwilioSms(settings)
    return OutboxSms(settings)
