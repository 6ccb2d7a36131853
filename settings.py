"""dunwise settings, read from ``DUNWISE_*`` environment variables and a ``.env`` file.

Every setting has an embedded default so ``dunwise run`` works with no set-up:
an embedded Temporal dev server, a SQLite ledger, and outbox folders for email and SMS.
"""

from __future__ import annotations

import os
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET_KEY = "dunwise-dev-secret-change-me"
DEV_STRIPE_WEBHOOK_SECRET = "whsec_dunwise_local_development"
LOCAL_STRIPE_KEY = "sk_test_dunwise_local"
# Far below how long an invoice waits for its coordinator (an hour).
LONGEST_GROUP_WINDOW_SECONDS = 600.0


def default_activity_processes() -> int:
    """One process of activities beside the workflows' when the machine has a core to spare:
    Python runs one thread at a time per process, and activities that share the workflows'
    process hold up their tasks."""
    return 1 if (os.cpu_count() or 1) >= 2 else 0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DUNWISE_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("data"), description="Folder for embedded state and outboxes")

    # Temporal: no address means "start the embedded dev server".
    temporal_address: str | None = None
    temporal_namespace: str = "default"
    temporal_task_queue: str = "dunwise"
    # Workflows a worker keeps in memory (about 0.15 MB each). One evicted replays its history
    # on its next event: when a burst of reminders wakes more invoices than this, each of them
    # is replayed, so keep it above the invoices and customers that fall due together.
    workflow_cache_size: int = Field(10_000, ge=0)
    # How long a workflow task waits for the worker that has the run cached before any worker
    # may take it (replaying the history). A burst queues thousands of tasks for that worker;
    # a short wait moves them all to replays, which costs the worker and the server twice.
    # A worker that stops tells the server, so only a crashed one's tasks wait this long.
    sticky_queue_timeout_seconds: float = Field(300.0, gt=0)
    # Processes that run the activities (`dunwise worker --activities-only`) beside the
    # workflows of `dunwise run` and `dunwise simulate`; 0 runs them in the same process.
    # Rendering, the ledger and delivery then use another core than the workflows.
    activity_processes: int = Field(default_factory=default_activity_processes, ge=0, le=16)
    temporal_api_key: SecretStr | None = None
    temporal_tls: bool = False
    temporal_dev_port: int = 7233  # of the embedded server; 0 picks a free port
    temporal_ui_port: int = 8233  # 0 picks a free port
    # The embedded server's web UI; off, the server runs headless.
    temporal_ui: bool = True
    # `dunwise run` restarts an embedded server that dies, at most this many times within
    # the window; once more and it stops with an error rather than run without a server.
    temporal_restarts: int = Field(3, ge=0)
    temporal_restart_window_seconds: float = Field(300.0, gt=0)
    # How long an invoice command waits for its answer (a ledger outage keeps it open).
    request_timeout_seconds: float = Field(60.0, gt=0)

    # Ledger: no URL means a SQLite file in the data folder.
    database_url: str | None = None

    # fsync outbox and journal files and keep SQLite fully synchronous. Only a scratch run
    # (a what-if simulation) turns this off.
    durable_writes: bool = True
    # Re-import the workflow modules for every workflow run, so the sandbox also refuses a
    # non-deterministic call made in them: on in the tests, off in a serving worker (see worker.py).
    strict_workflow_sandbox: bool = False

    # Policies: the folder of YAML policies that imports choose from (default: the shipped ones).
    policy_dir: Path | None = None
    # The policy for imported rows that name neither a policy nor a segment.
    default_policy: str = "standard"

    # Messaging
    outbox_dir: Path | None = None
    email_from: str = "billing@example.com"
    company_name: str = "Example Co"
    # Reminders of one customer's invoices due the same day go out as one message: the
    # customer's coordinator waits up to this long for the others to join. 0 sends each
    # reminder as soon as it falls due.
    message_group_window_seconds: float = Field(5.0, ge=0, le=LONGEST_GROUP_WINDOW_SECONDS)
    # At most this many reminders a day per channel to one customer across their invoices
    # (receipts and one-off messages don't count); 0, the default, for no limit.
    reminders_per_channel_per_day: int = Field(0, ge=0, le=100)
    # No SMS goes out in these hours of the customer's day, whatever a policy's send window
    # says: "HH:MM-HH:MM", across midnight when the first is later; empty for none.
    sms_quiet_hours: str = Field(
        "21:00-08:00", pattern=r"^$|^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$"
    )

    # Pay links
    public_base_url: str = "http://127.0.0.1:8000"
    secret_key: SecretStr = SecretStr(DEV_SECRET_KEY)
    pay_link_max_age_days: int = Field(45, ge=1, le=3650)

    # The web app (portal, webhooks, API): where `dunwise run` and `dunwise web` listen.
    web_host: str = "127.0.0.1"
    web_port: int = Field(8000, ge=0, le=65535)
    # Branding of the portal's pages and PDFs.
    brand_color: str = Field("#1d4ed8", pattern=r"^#[0-9a-fA-F]{6}$")
    logo_url: str | None = None
    support_email: str | None = None
    # Emails sign off with this line (unset: the layout's team line, "Accounts Receivable,
    # <company name>" in English) and
    # end with the legal footer, if any (company register, address, ...).
    email_signature: str | None = Field(None, max_length=200)
    legal_footer: str | None = Field(None, max_length=1000)

    # Payments. No Stripe key: `dunwise run` starts a local Stripe-compatible server.
    stripe_secret_key: SecretStr | None = None
    stripe_publishable_key: str | None = None
    stripe_webhook_secret: SecretStr = SecretStr(DEV_STRIPE_WEBHOOK_SECRET)
    stripe_api_base: str | None = Field(None, description="None: Stripe's own API (or local)")
    stripe_js_url: str | None = Field(None, description="None: Stripe.js of the API in use")
    local_stripe_port: int = Field(8420, ge=0, le=65535)
    # An optional card surcharge, shown before paying; never on bank debit.
    card_surcharge_percent: Decimal = Field(Decimal(0), ge=0, le=10)
    card_surcharge_cap: Decimal | None = Field(None, gt=0)

    # ERP clearing: no URL means a journal file in the data folder.
    erp_url: str | None = None
    erp_secret: SecretStr | None = None
    erp_journal: Path | None = None

    # Message delivery: "outbox" writes files under the outbox folder.
    email_backend: Literal["outbox", "sendgrid", "smtp"] = "outbox"
    sms_backend: Literal["outbox", "twilio"] = "outbox"
    delivery_timeout_seconds: float = 20.0
    sendgrid_api_key: SecretStr | None = None
    sendgrid_host: str = "https://api.sendgrid.com"
    templates_dir: Path | None = Field(
        None, description="finance ops' message templates, searched before the shipped ones"
    )
    sendgrid_webhook_public_key: str | None = Field(
        None, description="the signed event webhook's verification key, base64 as SendGrid shows it"
    )
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from: str | None = Field(None, description="sender number (E.164) or sender id")
    twilio_base_url: str | None = Field(None, description="None means Twilio's own API host")
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    # The CA certificates (PEM) that sign the SMTP server's certificate, for a server with a
    # private CA; None trusts the system's CAs.
    smtp_ca_file: Path | None = None
    erp_timeout_seconds: float = 30.0

    @classmethod
    def scratch(cls, folder: Path, task_queue: str) -> Settings:
        """Settings for a throw-away run (simulation, test, benchmark) kept inside `folder`:
        SQLite ledger, outbox delivery, journal ERP, no fsyncs, its own task queue."""
        return cls(
            _env_file=None,
            data_dir=folder,
            database_url=None,
            outbox_dir=folder / "outbox",
            erp_url=None,
            erp_journal=folder / "erp-journal.jsonl",
            temporal_task_queue=task_queue,
            email_backend="outbox",
            sms_backend="outbox",
            durable_writes=False,
        )

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'dunwise.db').resolve()}"

    @property
    def effective_outbox_dir(self) -> Path:
        return self.outbox_dir or self.data_dir / "outbox"

    @property
    def effective_erp_journal(self) -> Path:
        return self.erp_journal or self.data_dir / "erp-journal.jsonl"

    @property
    def embedded_temporal(self) -> bool:
        return self.temporal_address is None

    @property
    def local_stripe(self) -> bool:
        """No Stripe key: payments go to the local Stripe-compatible server."""
        return self.stripe_secret_key is None

    @property
    def effective_stripe_api_base(self) -> str:
        if self.stripe_api_base:
            return self.stripe_api_base.rstrip("/")
        if self.local_stripe:
            return f"http://127.0.0.1:{self.local_stripe_port}"
        return "https://api.stripe.com"

    @property
    def effective_stripe_js_url(self) -> str:
        if self.stripe_js_url:
            return self.stripe_js_url
        if self.local_stripe:
            return f"{self.effective_stripe_api_base}/js.stripe.com/v3/"
        return "https://js.stripe.com/v3/"

    @property
    def effective_stripe_secret_key(self) -> str:
        key = self.stripe_secret_key
        return key.get_secret_value() if key is not None else LOCAL_STRIPE_KEY

    @property
    def effective_stripe_publishable_key(self) -> str:
        return self.stripe_publishable_key or "pk_test_dunwise_local"


@lru_cache
def get_settings() -> Settings:
    return Settings()
