"""`dunwise customer show CUSTOMER_ID [--json]`: a customer as a collector looks them up
(ledger.customer_profile): contacts and whether reminders may go out on each channel, the
account's owner, what is open per currency, and the latest messages with their outcome."""

from __future__ import annotations

from typing import TYPE_CHECKING

from commands.queues import in_ledger

if TYPE_CHECKING:
    from ledger.customer_profile import CustomerProfile
    from settings import Settings


def show_customer(settings: Settings, customer_id: str, *, as_json: bool) -> None:
    from ledger.customer_profile import customer_profile

    profile = in_ledger(settings, lambda session: customer_profile(session, customer_id))
    print(profile.model_dump_json(indent=2) if as_json else profile_text(profile))


def profile_text(profile: CustomerProfile) -> str:
    from ledger.books import money_text

    owner = f"owner {profile.owner}" if profile.owner else "no owner"
    lines = [
        f"customer {profile.customer_id}: {profile.name} ({owner})",
        f"  timezone {profile.timezone}, locale {profile.locale}, "
        f"segment {profile.segment or 'none'}",
    ]
    for contact in profile.contacts:
        if contact.address is None:
            consent = "no address: nothing is sent"
        elif contact.opted_out:
            consent = "opted out: no reminders"
        elif contact.undeliverable:
            consent = f"undeliverable ({contact.undeliverable}): nothing is sent"
        else:
            consent = "reminders go out"
        lines.append(f"  {contact.channel:<5} {contact.address or '-':<32} {consent}")
    owed = ", ".join(money_text(m, c) for c, m in profile.outstanding_minor.items()) or "nothing"
    lines.append(f"  open: {profile.open_invoices} invoice(s), {owed} outstanding")
    if profile.recent_messages:
        lines.append("  latest messages:")
    for message in profile.recent_messages:
        reason = f" ({message.reason})" if message.reason else ""
        lines.append(
            f"    {message.at:%Y-%m-%d %H:%M} UTC  {message.channel:<5} {message.template:<18} "
            f"{message.status}{reason}  {message.invoice or ''}".rstrip()
        )
    return "\n".join(lines)
