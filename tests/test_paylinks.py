from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from paylinks import (
    PayLinkExpired,
    PayLinkInvalid,
    make_pay_link,
    make_pay_token,
    make_unsubscribe_link,
    read_pay_token,
    read_unsubscribe_token,
)
from settings import Settings


@pytest.fixture
def settings() -> Settings:
    return Settings(
        secret_key=SecretStr("test-secret-one"),
        public_base_url="https://pay.example.com/",
        pay_link_max_age_days=45,
    )


def token_of(link: str) -> str:
    return link.rsplit("/", 1)[1]


BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def flip(character: str) -> str:
    """Another base64url character whose top bit differs, so the decoded bytes change."""
    if character not in BASE64URL:
        return "A"
    return BASE64URL[BASE64URL.index(character) ^ 32]


def test_round_trip(settings: Settings) -> None:
    link = make_pay_link(settings, "cust-1", ["INV-1", "INV-2"])
    assert link.startswith("https://pay.example.com/pay/")
    token = read_pay_token(settings, token_of(link))
    assert token.customer_id == "cust-1"
    assert token.invoice_numbers == ["INV-1", "INV-2"]
    assert abs(token.issued_at - datetime.now(UTC)) < timedelta(minutes=1)


def test_link_is_short_enough_for_sms(settings: Settings) -> None:
    assert len(make_pay_link(settings, "cust-000123", ["INV-2025-000042"])) < 130


@pytest.mark.parametrize("position", [0, 10, -1])
def test_tampered_token_is_invalid(settings: Settings, position: int) -> None:
    token = make_pay_token(settings, "cust-1", ["INV-1"])
    characters = list(token)
    characters[position] = flip(characters[position])
    with pytest.raises(PayLinkInvalid):
        read_pay_token(settings, "".join(characters))


def test_payload_swapped_between_tokens_is_invalid(settings: Settings) -> None:
    mine = make_pay_token(settings, "cust-1", ["INV-1"])
    theirs = make_pay_token(settings, "cust-2", ["INV-9"])
    forged = theirs.split(".")[0] + "." + ".".join(mine.split(".")[1:])
    with pytest.raises(PayLinkInvalid):
        read_pay_token(settings, forged)


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "../../etc/passwd"])
def test_garbage_is_invalid(settings: Settings, garbage: str) -> None:
    with pytest.raises(PayLinkInvalid):
        read_pay_token(settings, garbage)


def test_expired_after_max_age(settings: Settings) -> None:
    token = make_pay_token(settings, "cust-1", ["INV-1"])
    now = datetime.now(UTC)
    assert read_pay_token(settings, token, now=now + timedelta(days=44)).customer_id == "cust-1"
    with pytest.raises(PayLinkExpired, match="45 days"):
        read_pay_token(settings, token, now=now + timedelta(days=46))


def test_expired_is_also_a_pay_link_error_but_not_invalid(settings: Settings) -> None:
    token = make_pay_token(settings, "cust-1", ["INV-1"])
    later = datetime.now(UTC) + timedelta(days=90)
    with pytest.raises(PayLinkExpired) as caught:
        read_pay_token(settings, token, now=later)
    assert not isinstance(caught.value, PayLinkInvalid)


def test_token_from_the_future_is_invalid(settings: Settings) -> None:
    token = make_pay_token(settings, "cust-1", ["INV-1"])
    with pytest.raises(PayLinkInvalid):
        read_pay_token(settings, token, now=datetime.now(UTC) - timedelta(hours=1))


def test_other_secret_is_invalid(settings: Settings) -> None:
    token = make_pay_token(settings, "cust-1", ["INV-1"])
    other = settings.model_copy(update={"secret_key": SecretStr("another-secret")})
    with pytest.raises(PayLinkInvalid):
        read_pay_token(other, token)


def test_unsubscribe_token_is_not_a_pay_token(settings: Settings) -> None:
    link = make_unsubscribe_link(settings, "cust-1", "email")
    with pytest.raises(PayLinkInvalid):
        read_pay_token(settings, token_of(link))
    with pytest.raises(PayLinkInvalid):
        read_unsubscribe_token(settings, make_pay_token(settings, "cust-1", []))


def test_unsubscribe_round_trip(settings: Settings) -> None:
    link = make_unsubscribe_link(settings, "cust-7", "sms")
    assert link.startswith("https://pay.example.com/unsubscribe/")
    token = read_unsubscribe_token(settings, token_of(link))
    assert (token.customer_id, token.channel) == ("cust-7", "sms")
    with pytest.raises(ValueError, match="unknown channel"):
        make_unsubscribe_link(settings, "cust-7", "fax")
