"""Twilio's webhooks: replies to reminders at `/webhooks/twilio/inbound`, and each sent SMS's
status at `/webhooks/twilio/status` (delivered, undelivered, failed: once per status, acted on
as `payments.delivery_news` says: timelines, and an undelivered SMS followed up).

The `X-Twilio-Signature` is checked the way Twilio computes it (HMAC-SHA1 over the public URL
Twilio called and the sorted form fields, keyed with the auth token) before anything is read:
bad or missing, 403 and nothing recorded. Twilio calls the URL under
`DUNWISE_PUBLIC_BASE_URL`, so that is the URL checked, whatever proxy is in between.

STOP and its synonyms opt every customer with the sending number out of SMS, START and its
synonyms opt them back in, HELP answers with the sender's contact line; anything else is left
for a collector to read in Twilio. Repeats change nothing (`ledger.consent`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from xml.sax.saxutils import escape

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from twilio.request_validator import RequestValidator

from ledger.consent import customers_with_phone, opt_in, opt_out
from ledger.db import session_scope
from payments.delivery_news import record_news, tell_each
from vocabulary import DeliveryKind

router = APIRouter(prefix="/webhooks/twilio", tags=["webhooks"])
# Twilio's own keywords (its default opt-out handling recognises the same words).
STOP_WORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"}
)
START_WORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})
# Twilio's final message statuses; queued, sending and sent say nothing a collector needs.
STATUS_KINDS = {
    "delivered": DeliveryKind.DELIVERED,
    "read": DeliveryKind.OPENED,
    "undelivered": DeliveryKind.BOUNCED,
    "failed": DeliveryKind.DROPPED,
}


@router.post("/inbound")
async def inbound_sms(request: Request) -> Response:
    form = await _signed_form(request)
    if isinstance(form, Response):
        return form
    settings = request.app.state.services.settings
    keyword = form.get("Body", "").strip().upper()
    phone = form.get("From", "")
    if keyword in STOP_WORDS or keyword in START_WORDS:
        change = opt_out if keyword in STOP_WORDS else opt_in
        with session_scope(request.app.state.services.engine) as session:
            for customer_id in customers_with_phone(session, phone):
                change(session, customer_id, "sms", actor="payer", via=f"SMS reply {keyword}")
        return _twiml()  # Twilio confirms STOP and START to the sender itself
    if keyword in HELP_WORDS:
        contact = settings.support_email or settings.email_from
        return _twiml(
            f"{settings.company_name}: payment reminders. Help: {contact}. "
            "Reply STOP to stop, START to start again."
        )
    return _twiml()


@router.post("/status")
async def message_status(request: Request) -> Response:
    """A sent SMS's status callback: each status once per message, on its row and timeline."""
    form = await _signed_form(request)
    if isinstance(form, Response):
        return form
    services = request.app.state.services
    kind = STATUS_KINDS.get(form.get("MessageStatus", ""))
    sid = form.get("MessageSid", "")
    if kind is None or not sid:
        return Response(status_code=204)
    detail = form.get("ErrorCode", "")
    detail = f"error {detail}" if detail else ""
    event_id = f"{sid}:{form['MessageStatus']}"  # a status comes once per message
    with session_scope(services.engine) as session:
        recorded = record_news(
            session,
            provider="twilio",
            event_id=event_id,
            kind=kind,
            at=datetime.now(UTC),
            detail=detail,
            provider_message_id=sid,
        )
    if recorded is not None and not await tell_each(services, [recorded]):
        # Kept untold: the web app tells it once Temporal is back (Twilio may not retry).
        return JSONResponse({"error": "recorded, but Temporal could not be told"}, status_code=503)
    return Response(status_code=204)


async def _signed_form(request: Request) -> dict[str, str] | Response:
    """The posted form if Twilio signed it; else the 403 answer."""
    settings = request.app.state.services.settings
    if settings.twilio_auth_token is None:
        return JSONResponse(
            {"error": "Twilio is not configured: set DUNWISE_TWILIO_AUTH_TOKEN"}, status_code=403
        )
    form = {key: str(value) for key, value in (await request.form()).items()}
    public_url = settings.public_base_url.rstrip("/") + request.url.path
    if request.url.query:
        public_url += f"?{request.url.query}"
    validator = RequestValidator(settings.twilio_auth_token.get_secret_value())
    if not validator.validate(public_url, form, request.headers.get("X-Twilio-Signature", "")):
        return JSONResponse({"error": "bad or missing X-Twilio-Signature"}, status_code=403)
    return form


def _twiml(message: str | None = None) -> Response:
    body = f"<Message>{escape(message)}</Message>" if message else ""
    return Response(
        f'<?xml version="1.0" encoding="UTF-8"?><Response>{body}</Response>',
        media_type="application/xml",
    )
