"""The payer's portal under load: page and API latency for a customer with many open
invoices, and a card payment from Stripe's webhook to a cleared, receipted invoice.

    python bench/portal.py [--invoices 1000] [--requests 300] [--payments 100] [--json]

One process holds the stack `dunwise run` embeds: the Temporal dev server (in memory) with a
worker, a SQLite ledger with durable writes, the local Stripe-compatible server and the web
app on loopback. One customer gets N open invoices straight in the ledger; only the invoices
the payments use get workflows, due far enough ahead that no reminder fires meanwhile.

- Pages: GET /pay/<token> and GET /api/portal/<token> (a link naming one invoice, as a
  reminder's does), R requests each, one at a time, beside a bare FastAPI route returning a
  constant, served by uvicorn on loopback: on a socket bound as uvicorn binds its own, and on
  one bound as `commands.web` binds the web app's (which decides whether TCP_NODELAY is set).
- Payments: a checkout of one invoice is opened in the ledger with a made-up PaymentIntent,
  then a signed `payment_intent.succeeded` is posted to the webhook; timed until the invoice
  is paid, its ERP journal line written and its receipt email sent. P payments one at a
  time, beside a no-op workflow update round trip on the same server.

Every figure follows untimed warm-up runs. The client shares the event loop with the web app
and the worker, for the baselines as for dunwise.
"""

from __future__ import annotations

import os
import sys

# Run as `python bench/portal.py`, this folder comes first on the path, where this file would
# stand in for the web app's `portal` package: the repository's root takes its place.
if os.path.abspath(sys.path[0] or os.curdir) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.insert(0, os.path.dirname(sys.path.pop(0)))

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI
from temporalio.client import Client

from bench.harness import arguments, latency_summary, measure, scratch_stack, start_dev_server
from bench.portal_payments import Payments, baseline_updates
from commands.web import listening_socket, serving_web
from invoices import invoice_input, start_invoice_workflow
from ledger.db import session_scope
from ledger.models import Customer, Invoice
from paylinks import make_pay_token
from policies.loader import load_policy
from settings import Settings
from worker import build_worker
from workflows.invoice import InvoiceWorkflow

STANDARD_POLICY = Path(__file__).resolve().parent.parent / "policies" / "standard.yaml"
CUSTOMER = "bench-customer"
TIMEZONE = "America/New_York"
WARMUP_REQUESTS = 20
WARMUP_PAYMENTS = 5


def machine() -> dict[str, object]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": sys.version.split()[0]}


# ------------------------------------------------------------------------------- the stack


def add_customer(engine: sa.Engine, count: int, payable: int) -> list[Invoice]:
    """One customer with `count` open invoices aged across every bucket; the last `payable`
    fall due in two months and are returned (they get workflows and are paid)."""
    policy = load_policy(STANDARD_POLICY)
    today = date.today()
    rows = []
    for index in range(count):
        days = 60 if index >= count - payable else 30 - index % 150
        due_on = today + timedelta(days=days)
        rows.append(
            Invoice(
                number=f"B-{index:06d}",
                customer_id=CUSTOMER,
                currency="USD",
                total_minor=10_000 + 7 * index,
                balance_minor=10_000 + 7 * index,
                issued_on=due_on - timedelta(days=30),
                due_on=due_on,
                policy_name=policy.name,
                policy_version=policy.version,
            )
        )
    with session_scope(engine) as session:
        session.add(
            Customer(id=CUSTOMER, name="Bench Wholesale", email="ap@b.example", timezone=TIMEZONE)
        )
        session.add_all(rows)
    return rows[count - payable :]


async def start_workflows(client: Client, settings: Settings, invoices: list[Invoice]) -> None:
    """Start the invoices' workflows and wait until each has run its first task."""
    policy = load_policy(STANDARD_POLICY)
    handles = [
        await start_invoice_workflow(
            client, settings, invoice_input(one, TIMEZONE, policy, planned_at=datetime.now(UTC))
        )
        for one in invoices
    ]
    for handle in handles:
        await handle.query(InvoiceWorkflow.state)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # as the web app's: Ctrl-C stays with this script
        yield


def uvicorn_socket() -> socket.socket:
    """A listening socket as uvicorn binds its own (TCP, so each connection gets TCP_NODELAY)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def serving_baseline(sock: socket.socket) -> AsyncIterator[str]:
    """A bare FastAPI app with one constant JSON route, served by uvicorn as the web app is."""
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    server = _Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the baseline app stopped while starting")
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/ping"
    finally:
        server.should_exit = True
        await asyncio.wait({task}, timeout=5)
        sock.close()


# ------------------------------------------------------------------------------- measuring


async def timed_gets(http: httpx.AsyncClient, url: str, count: int) -> dict[str, object]:
    """`count` GETs one after another, after untimed warm-up ones."""
    seconds: list[float] = []
    size = 0
    for index in range(WARMUP_REQUESTS + count):
        started = time.perf_counter()
        answer = await http.get(url)
        elapsed = time.perf_counter() - started
        if answer.status_code != 200:
            raise RuntimeError(f"GET {url} answered {answer.status_code}: {answer.text[:300]}")
        size = len(answer.content)
        if index >= WARMUP_REQUESTS:
            seconds.append(elapsed)
    return latency_summary(seconds, bytes=size)


# ------------------------------------------------------------------------------- main


async def bench(invoices: int, requests: int, payments: int) -> dict:
    stack = scratch_stack("dunwise-bench-portal-", "bench-portal", web_port=0, local_stripe_port=0)
    with stack as (settings, engine):
        payable = add_customer(engine, invoices, WARMUP_PAYMENTS + payments)
        async with await start_dev_server() as env, build_worker(env.client, settings, engine):
            await start_workflows(env.client, settings, payable)

            async def connect() -> Client:
                return env.client

            async with (
                serving_web(settings, engine, connect) as web,
                serving_baseline(uvicorn_socket()) as ping_url,
                serving_baseline(listening_socket("127.0.0.1", 0)) as ping_web_socket_url,
                httpx.AsyncClient(base_url=web.url, timeout=60.0, trust_env=False) as http,
            ):
                token = make_pay_token(settings, CUSTOMER, [payable[0].number])
                account = (await http.get(f"/api/portal/{token}")).json()
                if len(account["invoices"]) != invoices:
                    raise RuntimeError(f"the portal lists {len(account['invoices'])} invoices")
                pages = {
                    "page": await timed_gets(http, f"{web.url}/pay/{token}", requests),
                    "api": await timed_gets(http, f"{web.url}/api/portal/{token}", requests),
                    "baseline": await timed_gets(http, ping_url, requests),
                    "baseline_web_socket": await timed_gets(http, ping_web_socket_url, requests),
                }
                paying = Payments(settings, engine, http, CUSTOMER)
                answered, done = [], []
                for index, invoice in enumerate(payable):
                    webhook, whole = await paying.pay(invoice)
                    if index >= WARMUP_PAYMENTS:
                        answered.append(webhook)
                        done.append(whole)
                paid = {
                    "webhook_answered": latency_summary(answered),
                    "paid_cleared_receipted": latency_summary(done),
                    "baseline": await baseline_updates(env.client, payments, WARMUP_PAYMENTS),
                }
    return {
        "machine": machine(),
        "invoices": invoices,
        "requests": requests,
        "payments": payments,
        "warmup": {"requests": WARMUP_REQUESTS, "payments": WARMUP_PAYMENTS},
        "pages": {**pages, **ratios(pages, ("page", "api", "baseline_web_socket"))},
        "payment": {**paid, **ratios(paid, ("webhook_answered", "paid_cleared_receipted"))},
    }


def ratios(group: dict, names: tuple[str, ...]) -> dict[str, dict[str, float]]:
    base = group["baseline"]
    return {
        f"{name}_ratio": {
            key: round(group[name][key] / base[key], 1) for key in ("p50_ms", "p99_ms")
        }
        for name in names
    }


def report(result: dict) -> str:
    host = result["machine"]
    pages, paid = result["pages"], result["payment"]
    rows = [
        (f"GET /pay/<token>  (HTML, {pages['page']['bytes'] // 1024} KiB)", pages["page"],
         pages["page_ratio"]),
        (f"GET /api/portal/<token>  (JSON, {pages['api']['bytes'] // 1024} KiB)", pages["api"],
         pages["api_ratio"]),
        ("baseline: bare FastAPI route", pages["baseline"], None),
        ("  the same, on a socket bound as commands.web binds", pages["baseline_web_socket"],
         pages["baseline_web_socket_ratio"]),
        ("webhook posted -> answered", paid["webhook_answered"], paid["webhook_answered_ratio"]),
        ("webhook posted -> paid, cleared, receipted", paid["paid_cleared_receipted"],
         paid["paid_cleared_receipted_ratio"]),
        ("baseline: no-op workflow update", paid["baseline"], None),
    ]  # fmt: skip
    lines = [
        f"{result['invoices']} open invoices on one customer; {result['requests']} requests "
        f"and {result['payments']} payments, one at a time, after "
        f"{result['warmup']['requests']} and {result['warmup']['payments']} warm-up runs",
        f"{host['cpus']} CPUs, {host['cpu_model']}, Python {host['python']}; embedded Temporal "
        "dev server, SQLite ledger (durable writes), web app and client in one process",
        "",
        f"{'':<52} {'n':>5} {'p50 ms':>9} {'p99 ms':>9} {'x p50':>7} {'x p99':>7}",
    ]
    for name, run, ratio in rows:
        times = f"{ratio['p50_ms']:>7.1f} {ratio['p99_ms']:>7.1f}" if ratio else f"{'':>15}"
        lines.append(
            f"{name:<52} {run['count']:>5} {run['p50_ms']:>9.2f} {run['p99_ms']:>9.2f} {times}"
        )
    lines.append("x: times the baseline of its group")
    return "\n".join(lines)


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--invoices", type=int, default=1000, help="open invoices of the customer")
    parser.add_argument("--requests", type=int, default=300, help="timed GETs of each kind")
    parser.add_argument("--payments", type=int, default=100, help="timed webhook payments")
    args = parser.parse_args()
    if args.requests < 1 or args.payments < 1:
        parser.error("--requests and --payments must be at least 1")
    if args.invoices < args.payments + WARMUP_PAYMENTS:
        parser.error(
            f"--invoices must be at least --payments + {WARMUP_PAYMENTS} (the warm-up "
            "payments): each payment pays one of the customer's invoices"
        )
    measure(bench(args.invoices, args.requests, args.payments), args.json, report)


if __name__ == "__main__":
    main()
