"""Notification backends against real peers: aiosmtpd for SMTP, moto's server for SES."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses import ses_backends

from gateway.events.notify import (
    LogNotifier,
    Notification,
    SesNotifier,
    SmtpNotifier,
    build_notifier,
    format_money,
)
from gateway.settings import Settings
from tests.events.clients import _Sink, smtp_sink
from tests.events.conftest import REGION

NOTE = Notification(
    id="invoice_paid:in_1",
    to="ada@example.com",
    subject="Payment received for invoice SBX-1",
    body="Hello Ada,\n\nwe received your payment of 20.00 USD. Thank you!\n",
)


@pytest.fixture
def sink() -> Iterator[tuple[str, _Sink]]:
    with smtp_sink() as running:
        yield running


async def test_smtp_sends_a_plain_text_email_with_a_stable_message_id(
    sink: tuple[str, _Sink],
) -> None:
    url, server = sink
    notifier = SmtpNotifier(url, "Portal <portal@example.com>")
    await notifier.send(NOTE)
    await notifier.send(NOTE)
    first, second = server.messages
    assert first["From"] == "Portal <portal@example.com>"
    assert first["To"] == "ada@example.com"
    assert first["Subject"] == "Payment received for invoice SBX-1"
    assert first.get_payload().replace("\r\n", "\n") == NOTE.body
    # a resend of one notification carries the same Message-ID, so mail systems can tell
    assert first["Message-ID"] == second["Message-ID"]
    assert first["Message-ID"].endswith("@portal-gateway>")


async def test_smtp_failure_raises_for_the_worker_to_retry(sink: tuple[str, _Sink]) -> None:
    url, server = sink
    server.refuse = 1
    notifier = SmtpNotifier(url, "portal@example.com")
    with pytest.raises(Exception, match="try again later"):
        await notifier.send(NOTE)
    await notifier.send(NOTE)
    assert len(server.messages) == 1


def test_smtp_url_is_validated() -> None:
    with pytest.raises(ValueError, match="SMTP_URL must look like"):
        SmtpNotifier("http://mail.example.com", "portal@example.com")
    tls = SmtpNotifier("smtps://user%40x:p%3Ass@mail.example.com", "portal@example.com")
    assert (tls.tls, tls.port, tls.username, tls.password) == (True, 465, "user@x", "p:ss")
    assert SmtpNotifier("smtp://mail.example.com:2525", "p@example.com").port == 2525


async def test_ses_sends_through_the_ses_api(moto_url: str) -> None:
    notifier = SesNotifier("portal@example.com", REGION, endpoint_url=moto_url)
    try:
        with pytest.raises(ClientError, match="not verified"):
            await notifier.send(NOTE)
        client: Any = boto3.client("ses", region_name=REGION, endpoint_url=moto_url)
        client.verify_email_identity(EmailAddress="portal@example.com")
        client.close()
        await notifier.send(NOTE)
    finally:
        await notifier.aclose()
    sent = ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages
    [message] = [m for m in sent if m.subject == NOTE.subject]
    assert message.source == "portal@example.com"
    assert message.destinations["ToAddresses"] == ["ada@example.com"]
    assert message.body == NOTE.body


async def test_log_backend_writes_a_line_per_notification(
    caplog: pytest.LogCaptureFixture,
) -> None:
    notifier = LogNotifier()
    with caplog.at_level(logging.INFO, logger="gateway.events.notify"):
        await notifier.send(NOTE)
    [record] = [r for r in caplog.records if r.message == "notification"]
    assert record.notification_id == "invoice_paid:in_1"  # type: ignore[attr-defined]
    assert notifier.sent == [NOTE]


def test_backend_is_chosen_by_notify_backend(tmp_path: Any) -> None:
    def settings(**values: Any) -> Settings:
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    assert isinstance(build_notifier(settings()), LogNotifier)
    assert isinstance(
        build_notifier(settings(notify_backend="smtp", smtp_url="smtp://127.0.0.1:25")),
        SmtpNotifier,
    )
    with pytest.raises(ValueError, match="NOTIFY_BACKEND=smtp needs SMTP_URL"):
        build_notifier(settings(notify_backend="smtp"))


def test_money_is_shown_in_the_currency_s_own_units() -> None:
    assert format_money(123456, "usd") == "1,234.56 USD"
    assert format_money(5000, "jpy") == "5000 JPY"
