"""Delivery channels against real local servers: files, an SMTP server, HTTP APIs."""

from __future__ import annotations

import base64
import email
import email.policy
import ipaddress
import json
import smtplib
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from activities.delivery import (
    OutboxEmail,
    OutboxSms,
    OutgoingSms,
    PermanentDeliveryError,
    SendGridEmail,
    SmtpEmail,
    TwilioSms,
    email_channel,
    outbox_file_stem,
    sms_channel,
)
from activities.email_message import IDEMPOTENCY_HEADER, OutgoingEmail
from activities.files import append_json_line_once
from settings import Settings

# --------------------------------------------------------------------------- local servers


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(self.body.decode("utf-8")))


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class RecordingHttpServer:
    """A real HTTP server on 127.0.0.1 that records requests and plays scripted replies.

    Replies are used in order; the last one repeats.
    """

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies) or [Reply(200)]
        self.requests: list[RecordedRequest] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                recorder.requests.append(
                    RecordedRequest(
                        method=self.command,
                        path=self.path,
                        headers={key.lower(): value for key, value in self.headers.items()},
                        body=self.rfile.read(length),
                    )
                )
                reply = (
                    recorder.replies.pop(0) if len(recorder.replies) > 1 else recorder.replies[0]
                )
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, *args: Any) -> None:
                pass  # keep test output quiet

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> RecordingHttpServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SmtpRecorder:
    """aiosmtpd handler: keeps every accepted message; refuses addresses at refused.example."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], EmailMessage]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address.endswith("@refused.example"):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 Message accepted"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        outbox_dir=tmp_path / "outbox",
        email_from="billing@northwind.example",
        company_name="Northwind Traders",
    )


def an_email(key: str = "INV-1:step:0:email", to: str = "ap@acme.example") -> OutgoingEmail:
    return OutgoingEmail(
        to=to,
        subject="Invoice INV-1 is due today",
        text="Hello,\nplease pay.\n",
        html="<p>Hello, <strong>please pay</strong>.</p>",
        idempotency_key=key,
        unsubscribe_link="https://pay.example/unsubscribe/abc",
    )


def an_sms(key: str = "INV-1:step:1:sms") -> OutgoingSms:
    return OutgoingSms(
        to="+12125550100", body="Pay INV-1: https://pay.example/p", idempotency_key=key
    )


# --------------------------------------------------------------------------- outbox email


def test_outbox_email_is_a_real_multipart_eml(settings: Settings) -> None:
    channel = OutboxEmail(settings)
    delivered = channel.deliver(an_email())

    [path] = (settings.effective_outbox_dir / "email").iterdir()
    assert delivered.provider_id == path.name
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert message["From"] == "Northwind Traders <billing@northwind.example>"
    assert message["To"] == "ap@acme.example"
    assert message["Subject"] == "Invoice INV-1 is due today"
    assert message["Date"]
    assert message["Message-ID"].endswith("@northwind.example>")
    assert message[IDEMPOTENCY_HEADER] == "INV-1:step:0:email"
    assert message["List-Unsubscribe"] == "<https://pay.example/unsubscribe/abc>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message.get_content_type() == "multipart/alternative"
    assert message.get_body(("plain",)).get_content() == "Hello,\nplease pay.\n"
    assert "<strong>please pay</strong>" in message.get_body(("html",)).get_content()


def test_outbox_email_keeps_non_ascii_words_and_long_links_readable(settings: Settings) -> None:
    link = "https://pay.example/unsubscribe/" + "t" * 300
    message = an_email().model_copy(
        update={
            "subject": "Rechnung INV-1 über 1.250,00 € ist fällig",
            "text": "Grüße\n" + "eine sehr lange Zeile " * 40 + "\n",
            "unsubscribe_link": link,
        }
    )
    path = Path(OutboxEmail(settings).deliver(message).provider_id or "")
    raw = (settings.effective_outbox_dir / "email" / path).read_bytes()
    assert f"List-Unsubscribe: <{link}>".encode() in raw  # one line, not encoded
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Subject"] == "Rechnung INV-1 über 1.250,00 € ist fällig"
    assert parsed.get_body(("plain",)).get_content() == message.text


@pytest.mark.parametrize(
    "field, value", [("to", "ap@acme.example\nBcc: all@acme.example"), ("subject", "Due\r\nX: y")]
)
def test_a_header_with_a_line_break_is_refused(settings: Settings, field: str, value: str) -> None:
    with pytest.raises(ValueError, match="may not contain a line break"):
        OutboxEmail(settings).deliver(an_email().model_copy(update={field: value}))
    assert not (settings.effective_outbox_dir / "email").exists() or not list(
        (settings.effective_outbox_dir / "email").iterdir()
    )


def test_outbox_email_is_named_after_the_key_and_written_once(settings: Settings) -> None:
    channel = OutboxEmail(settings)
    first = channel.deliver(an_email())
    path = channel.path_for("INV-1:step:0:email")
    written = path.read_bytes()
    second = channel.deliver(an_email())

    assert first == second
    assert path.name.startswith("INV-1_step_0_email-")
    assert list(path.parent.iterdir()) == [path]  # no second file, no temp file left
    assert path.read_bytes() == written


def test_outbox_file_names_are_safe_and_distinct() -> None:
    stems = {outbox_file_stem(key) for key in ("a/b", "a:b", "a b", "../a_b", "a_b")}
    assert len(stems) == 5
    for stem in stems:
        assert "/" not in stem and not stem.startswith(".")
    assert len(outbox_file_stem("x" * 1000)) < 200


def test_outbox_email_crash_leaves_no_half_message(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    channel = OutboxEmail(settings)

    def crash(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("activities.files.os.replace", crash)
    with pytest.raises(OSError, match="disk full"):
        channel.deliver(an_email())
    monkeypatch.undo()

    folder = settings.effective_outbox_dir / "email"
    assert list(folder.iterdir()) == []
    channel.deliver(an_email())
    assert len(list(folder.iterdir())) == 1


# --------------------------------------------------------------------------- outbox SMS


def test_outbox_sms_appends_one_json_line_per_key(settings: Settings) -> None:
    channel = OutboxSms(settings)
    channel.deliver(an_sms("k1"))
    channel.deliver(an_sms("k2"))
    channel.deliver(an_sms("k1"))  # a retry

    lines = (settings.effective_outbox_dir / "sms.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [record["idempotency_key"] for record in records] == ["k1", "k2"]
    assert set(records[0]) == {"to", "body", "idempotency_key", "at"}
    assert records[0]["to"] == "+12125550100"
    assert records[0]["body"] == "Pay INV-1: https://pay.example/p"


def test_outbox_sms_is_safe_from_concurrent_threads(settings: Settings) -> None:
    channel = OutboxSms(settings)
    keys = [f"k{index % 10}" for index in range(40)]
    threads = [threading.Thread(target=channel.deliver, args=(an_sms(key),)) for key in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = (settings.effective_outbox_dir / "sms.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["idempotency_key"] for line in lines) == sorted(set(keys))


def test_a_journal_finds_its_key_only_in_the_key_field(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    for index in range(2_000):
        # Other lines mention the key in another field: only the key field counts.
        append_json_line_once(
            journal, {"key": f"k{index}", "note": "retry of k-last"}, key_field="key"
        )
    assert append_json_line_once(journal, {"key": "k-last", "note": ""}, key_field="key")
    assert not append_json_line_once(journal, {"key": "k-last", "note": "again"}, key_field="key")
    assert not append_json_line_once(journal, {"key": "k1999"}, key_field="key")
    assert append_json_line_once(journal, {"key": "k-ümlaut"}, key_field="key")
    assert not append_json_line_once(journal, {"key": "k-ümlaut"}, key_field="key")
    lines = [json.loads(line) for line in journal.read_text("utf-8").splitlines()]
    assert [line["key"] for line in lines[-2:]] == ["k-last", "k-ümlaut"]
    assert len(lines) == 2_002


def test_backends_default_to_the_outbox(settings: Settings) -> None:
    assert isinstance(email_channel(settings), OutboxEmail)
    assert isinstance(sms_channel(settings), OutboxSms)


# --------------------------------------------------------------------------- SMTP


@pytest.fixture
def smtp_server() -> Iterator[tuple[SmtpRecorder, int]]:
    recorder = SmtpRecorder()
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield recorder, port
    finally:
        controller.stop()


def smtp_settings(settings: Settings, port: int, **changes: Any) -> Settings:
    return settings.model_copy(
        update={"email_backend": "smtp", "smtp_host": "127.0.0.1", "smtp_port": port, **changes}
    )


def test_smtp_sends_the_same_message_as_the_outbox(
    settings: Settings, smtp_server: tuple[SmtpRecorder, int]
) -> None:
    recorder, port = smtp_server
    channel = email_channel(smtp_settings(settings, port))
    assert isinstance(channel, SmtpEmail)
    delivered = channel.deliver(an_email())

    [(sender, recipients, message)] = recorder.messages
    assert sender == "billing@northwind.example"
    assert recipients == ["ap@acme.example"]
    assert message["Subject"] == "Invoice INV-1 is due today"
    assert message[IDEMPOTENCY_HEADER] == "INV-1:step:0:email"
    assert message["Message-ID"] == delivered.provider_id
    assert message.get_body(("html",)) is not None


def test_smtp_keeps_one_message_id_across_retries(
    settings: Settings, smtp_server: tuple[SmtpRecorder, int]
) -> None:
    recorder, port = smtp_server
    channel = SmtpEmail(smtp_settings(settings, port))
    channel.deliver(an_email())
    channel.deliver(an_email())
    ids = {message["Message-ID"] for _, _, message in recorder.messages}
    assert len(ids) == 1


def test_smtp_refused_recipient_is_permanent(
    settings: Settings, smtp_server: tuple[SmtpRecorder, int]
) -> None:
    recorder, port = smtp_server
    with pytest.raises(PermanentDeliveryError, match="nobody@refused.example"):
        SmtpEmail(smtp_settings(settings, port)).deliver(an_email(to="nobody@refused.example"))
    assert recorder.messages == []


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_smtp_logs_in_with_the_configured_credentials(settings: Settings) -> None:
    recorder = SmtpRecorder()
    logins: list[tuple[bytes, bytes]] = []

    def authenticator(server, session, envelope, mechanism, auth_data) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == b"s3cret")

    port = free_port()
    controller = Controller(
        recorder,
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    try:
        configured = smtp_settings(
            settings, port, smtp_username="dunwise", smtp_password=SecretStr("s3cret")
        )
        SmtpEmail(configured).deliver(an_email())
    finally:
        controller.stop()
    assert logins == [(b"dunwise", b"s3cret")]
    assert len(recorder.messages) == 1


@pytest.fixture(scope="module")
def loopback_certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made here: (certificate, key) PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dunwise test SMTP")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "smtp.pem", folder / "smtp.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture
def starttls_server(
    loopback_certificate: tuple[Path, Path],
) -> Iterator[tuple[SmtpRecorder, int, list[bytes]]]:
    """An SMTP server that takes mail only after STARTTLS, and logins only over TLS."""
    recorder, logins = SmtpRecorder(), []

    def authenticator(server, session, envelope, mechanism, auth_data) -> AuthResult:
        logins.append(auth_data.login)
        return AuthResult(success=auth_data.password == b"s3cret")

    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(*loopback_certificate)
    port = free_port()
    controller = Controller(
        recorder,
        hostname="127.0.0.1",
        port=port,
        tls_context=tls,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=True,
    )
    controller.start()
    try:
        yield recorder, port, logins
    finally:
        controller.stop()


def test_smtp_starttls_with_a_private_ca_logs_in_and_sends(
    settings: Settings, starttls_server, loopback_certificate
) -> None:
    recorder, port, logins = starttls_server
    configured = smtp_settings(
        settings,
        port,
        smtp_starttls=True,
        smtp_ca_file=loopback_certificate[0],
        smtp_username="dunwise",
        smtp_password=SecretStr("s3cret"),
    )
    SmtpEmail(configured).deliver(an_email())
    assert logins == [b"dunwise"]
    [(_, recipients, message)] = recorder.messages
    assert recipients == ["ap@acme.example"]
    assert message["Subject"] == "Invoice INV-1 is due today"


def test_smtp_starttls_refuses_a_certificate_it_cannot_trust(
    settings: Settings, starttls_server
) -> None:
    recorder, port, _ = starttls_server
    configured = smtp_settings(settings, port, smtp_starttls=True)  # the system's CAs only
    with pytest.raises(ssl.SSLCertVerificationError):
        SmtpEmail(configured).deliver(an_email())
    assert recorder.messages == []


def test_smtp_without_starttls_is_refused_by_a_server_that_requires_it(
    settings: Settings, starttls_server
) -> None:
    recorder, port, _ = starttls_server
    with pytest.raises(smtplib.SMTPException):
        SmtpEmail(smtp_settings(settings, port)).deliver(an_email())
    assert recorder.messages == []


def test_smtp_server_down_is_retryable(settings: Settings) -> None:
    channel = SmtpEmail(smtp_settings(settings, free_port()))
    with pytest.raises(OSError):
        channel.deliver(an_email())


# --------------------------------------------------------------------------- SendGrid


def sendgrid_settings(settings: Settings, url: str) -> Settings:
    return settings.model_copy(
        update={
            "email_backend": "sendgrid",
            "sendgrid_api_key": SecretStr("SG.test-key"),
            "sendgrid_host": url,
        }
    )


def test_sendgrid_sdk_posts_the_mail_to_the_configured_host(settings: Settings) -> None:
    accepted = Reply(202, headers={"X-Message-Id": "sg-message-1"})
    with RecordingHttpServer(accepted) as server:
        channel = email_channel(sendgrid_settings(settings, server.url))
        assert isinstance(channel, SendGridEmail)
        delivered = channel.deliver(an_email())

    assert delivered.provider_id == "sg-message-1"
    [request] = server.requests
    assert (request.method, request.path) == ("POST", "/v3/mail/send")
    assert request.headers["authorization"] == "Bearer SG.test-key"
    assert request.headers["content-type"] == "application/json"
    body = request.json()
    assert body["from"] == {"email": "billing@northwind.example", "name": "Northwind Traders"}
    assert body["subject"] == "Invoice INV-1 is due today"
    [personalization] = body["personalizations"]
    assert personalization["to"] == [{"email": "ap@acme.example"}]
    assert body["headers"][IDEMPOTENCY_HEADER] == "INV-1:step:0:email"
    assert body["headers"]["List-Unsubscribe"] == "<https://pay.example/unsubscribe/abc>"
    # RFC 8058 one-click: mail clients POST to the link, which the portal honours.
    assert body["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert body["custom_args"] == {"dunwise_idempotency_key": "INV-1:step:0:email"}
    contents = {part["type"]: part["value"] for part in body["content"]}
    assert contents["text/plain"] == "Hello,\nplease pay.\n"
    assert "<strong>please pay</strong>" in contents["text/html"]


def test_sendgrid_bad_request_is_permanent(settings: Settings) -> None:
    refused = Reply(400, b'{"errors":[{"message":"Does not contain a valid address."}]}')
    with RecordingHttpServer(refused) as server:
        channel = SendGridEmail(sendgrid_settings(settings, server.url))
        with pytest.raises(PermanentDeliveryError, match="valid address"):
            channel.deliver(an_email())


@pytest.mark.parametrize("status", [401, 429, 500, 503])
def test_sendgrid_other_errors_are_retryable(settings: Settings, status: int) -> None:
    with RecordingHttpServer(Reply(status, b'{"errors":[]}')) as server:
        channel = SendGridEmail(sendgrid_settings(settings, server.url))
        with pytest.raises(RuntimeError, match=str(status)):
            channel.deliver(an_email())


def test_sendgrid_needs_an_api_key(settings: Settings) -> None:
    with pytest.raises(ValueError, match="SENDGRID_API_KEY"):
        email_channel(settings.model_copy(update={"email_backend": "sendgrid"}))


# --------------------------------------------------------------------------- Twilio

ACCOUNT_SID = "AC" + "0" * 32


def twilio_settings(settings: Settings, url: str, sender: str = "+15005550006") -> Settings:
    return settings.model_copy(
        update={
            "sms_backend": "twilio",
            "twilio_account_sid": ACCOUNT_SID,
            "twilio_auth_token": SecretStr("twilio-token"),
            "twilio_from": sender,
            "twilio_base_url": url,
        }
    )


def twilio_created(to: str, body: str) -> Reply:
    sid = "SM" + "1" * 32
    payload = {
        "sid": sid,
        "account_sid": ACCOUNT_SID,
        "to": to,
        "from": "+15005550006",
        "body": body,
        "status": "queued",
        "direction": "outbound-api",
        "num_segments": "1",
        "api_version": "2010-04-01",
        "date_created": "Mon, 02 Mar 2026 08:00:00 +0000",
        "uri": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}.json",
    }
    return Reply(201, json.dumps(payload).encode(), {"Content-Type": "application/json"})


def test_twilio_sdk_creates_the_message_at_the_configured_base_url(settings: Settings) -> None:
    sms = an_sms()
    with RecordingHttpServer(twilio_created(sms.to, sms.body)) as server:
        channel = sms_channel(twilio_settings(settings, server.url))
        assert isinstance(channel, TwilioSms)
        delivered = channel.deliver(sms)

    assert delivered.provider_id == "SM" + "1" * 32
    [request] = server.requests
    assert request.method == "POST"
    assert request.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    expected_auth = base64.b64encode(f"{ACCOUNT_SID}:twilio-token".encode()).decode()
    assert request.headers["authorization"] == f"Basic {expected_auth}"
    assert request.form() == {
        "To": sms.to,
        "From": "+15005550006",
        "Body": sms.body,
        "StatusCallback": f"{settings.public_base_url}/webhooks/twilio/status",
    }


def test_twilio_messaging_service_sender(settings: Settings) -> None:
    sms = an_sms()
    service = "MG" + "2" * 32
    with RecordingHttpServer(twilio_created(sms.to, sms.body)) as server:
        TwilioSms(twilio_settings(settings, server.url, sender=service)).deliver(sms)
    assert server.requests[0].form()["MessagingServiceSid"] == service


def test_twilio_invalid_number_is_permanent(settings: Settings) -> None:
    invalid = Reply(
        400,
        json.dumps(
            {
                "code": 21211,
                "message": "The 'To' number is not a valid phone number.",
                "status": 400,
            }
        ).encode(),
        {"Content-Type": "application/json"},
    )
    with RecordingHttpServer(invalid) as server:
        channel = TwilioSms(twilio_settings(settings, server.url))
        with pytest.raises(PermanentDeliveryError, match="21211"):
            channel.deliver(an_sms())


def test_twilio_server_error_is_retryable(settings: Settings) -> None:
    failure = Reply(503, b'{"code": 20503, "message": "Service unavailable", "status": 503}')
    with RecordingHttpServer(failure) as server:
        channel = TwilioSms(twilio_settings(settings, server.url))
        with pytest.raises(RuntimeError, match="503"):
            channel.deliver(an_sms())


def test_twilio_needs_credentials(settings: Settings) -> None:
    with pytest.raises(ValueError, match="TWILIO_ACCOUNT_SID"):
        sms_channel(settings.model_copy(update={"sms_backend": "twilio"}))
