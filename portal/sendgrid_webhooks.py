"""SendGrid's event webhook at `/webhooks/sendgrid`: what happened to each email after it left.

The signed event webhook is checked before anything is read: an ECDSA (P-256, SHA-256)
signature over the timestamp header and the raw body, with the verification key SendGrid
shows (`DUNWISE_SENDGRID_WEBHOOK_PUBLIC_KEY`); bad or missing, or no key set, is 403 and
nothing is recorded. Each event is recorded once by its `sg_event_id` on the message it names
(the `dunwise_idempotency_key` custom argument every email carries) and acted on as
`payments.delivery_news` says: timelines, opt-outs, and a hard bounce or a dropped email
followed up (a `blocked` bounce is temporary and ignored). With Temporal unreachable the
answer is 503, so SendGrid sends the events again; they are recorded once all the same.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ledger.db import session_scope
from ledger.delivery_events import RecordedDelivery
from payments.delivery_news import record_news, tell_each
from vocabulary import DeliveryKind

router = APIRouter(prefix="/webhooks", tags=["webhooks"])
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
# SendGrid's event names; `processed` and `deferred` say nothing a collector needs.
KINDS = {
    "delivered": DeliveryKind.DELIVERED,
    "open": DeliveryKind.OPENED,
    "click": DeliveryKind.CLICKED,
    "bounce": DeliveryKind.BOUNCED,
    "dropped": DeliveryKind.DROPPED,
    "spamreport": DeliveryKind.SPAM_REPORT,
    "unsubscribe": DeliveryKind.UNSUBSCRIBED,
    "group_unsubscribe": DeliveryKind.UNSUBSCRIBED,
}


class SignatureRefused(Exception):
    pass


@router.post("/sendgrid")
async def sendgrid_webhook(request: Request) -> JSONResponse:
    services = request.app.state.services
    payload = await request.body()
    try:
        verify_signature(
            services.settings.sendgrid_webhook_public_key,
            request.headers.get(SIGNATURE_HEADER),
            request.headers.get(TIMESTAMP_HEADER),
            payload,
        )
    except SignatureRefused as refused:
        return JSONResponse({"error": str(refused)}, status_code=403)
    try:
        events = json.loads(payload)
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            raise ValueError("expected a JSON array of event objects")
    except ValueError as err:
        return JSONResponse({"error": f"not SendGrid events: {err}"}, status_code=400)
    to_tell: dict[str, RecordedDelivery] = {}  # by event id: a batch may repeat one
    with session_scope(services.engine) as session:
        for event in events:
            kind = KINDS.get(str(event.get("event")))
            if kind is None or not event.get("sg_event_id") or _soft_bounce(event):
                continue
            new = record_news(
                session,
                provider="sendgrid",
                event_id=str(event["sg_event_id"]),
                kind=kind,
                at=_moment(event.get("timestamp")),
                detail=_detail(event),
                message_key=event.get("dunwise_idempotency_key"),
            )
            if new is not None:
                to_tell.setdefault(new.event_id, new)
    if await tell_each(services, list(to_tell.values())) < len(to_tell):
        # SendGrid sends the batch again; what was told is not told twice.
        return JSONResponse(
            {"error": "recorded, but Temporal could not be told: send the events again"},
            status_code=503,
        )
    recorded = sum(not each.repeat for each in to_tell.values())
    return JSONResponse({"received": len(events), "recorded": recorded})


def verify_signature(
    public_key: str | None, signature: str | None, timestamp: str | None, payload: bytes
) -> None:
    """Raise SignatureRefused unless `signature` signs timestamp + payload under the key."""
    if not public_key:
        raise SignatureRefused(
            "the SendGrid webhook is not configured: set DUNWISE_SENDGRID_WEBHOOK_PUBLIC_KEY"
        )
    if not signature or not timestamp:
        raise SignatureRefused(f"missing {SIGNATURE_HEADER} or {TIMESTAMP_HEADER}")
    try:
        key = load_der_public_key(base64.b64decode(public_key))
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise SignatureRefused("the SendGrid verification key is not an ECDSA key")
        key.verify(
            base64.b64decode(signature), timestamp.encode() + payload, ec.ECDSA(hashes.SHA256())
        )
    except (InvalidSignature, ValueError, binascii.Error):
        raise SignatureRefused("bad SendGrid event webhook signature") from None


def _moment(timestamp: Any) -> datetime:
    try:
        return datetime.fromtimestamp(int(timestamp), UTC)
    except (TypeError, ValueError, OverflowError):
        return datetime.now(UTC)


def _soft_bounce(event: dict[str, Any]) -> bool:
    """A `blocked` bounce is the receiving server refusing for now, not a bad address."""
    return event.get("event") == "bounce" and event.get("type") == "blocked"


def _detail(event: dict[str, Any]) -> str:
    """What a collector reads: the link clicked, or why the mail was refused."""
    return str(event.get("url") or event.get("reason") or event.get("response") or "")[:500]
