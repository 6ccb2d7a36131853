"""What the payment services need from the outside world, in one place: the ledger, Stripe and
Temporal. The web app builds one at start-up; tests build one against their own servers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import sqlalchemy as sa
from temporalio.client import Client

from payments.stripe_gateway import StripeGateway
from settings import Settings


@dataclass
class PaymentServices:
    settings: Settings
    engine: sa.Engine
    gateway: StripeGateway
    connect: Callable[[], Awaitable[Client]]
    _client: Client | None = field(default=None, init=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    async def temporal(self) -> Client:
        """The Temporal client, connected on first use (the web app may start before Temporal)."""
        async with self._lock:
            if self._client is None:
                self._client = await self.connect()
            return self._client
