"""Customer notifications: what to send for an event, and the backends that send it.

NOTIFY_BACKEND: `log` (development: a log line), `smtp` (SMTP_URL), `ses` (Amazon SES,
boto3 in a thread; AWS_REGION and boto3's usual credentials and endpoint variables).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import smtplib
import ssl
from email.message import EmailMessage
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import boto3
import msgspec

from gateway.domain import Customer, DomainEvent, Invoice, InvoicePaid, TicketUpdated
from gateway.settings import Settings

__all__ = [
    "LogNotifier",
    "Notification",
    "Notifier",
    "SesNotifier",
    "SmtpNotifier",
    "build_notifier",
    "format_money",
    "notifications_for",
    "ticket_received",
    "wants_notification",
]

log = logging.getLogger(__name__)

# ISO 4217 currencies without minor units (Stripe's list of zero-decimal currencies)
_ZERO_DECIMAL = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga"}
    | {"pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
)


class Notification(msgspec.Struct, frozen=True):
    id: str  # "{kind}:{subject id}": the key that keeps it from being sent twice
    to: str
    subject: str
    body: str


def format_money(amount: int, currency: str) -> str:
    if currency.lower() in _ZERO_DECIMAL:
        return f"{amount} {currency.upper()}"
    return f"{amount / 100:,.2f} {currency.upper()}"


def _invoice_paid(invoice: Invoice, customer: Customer, to: str) -> Notification:
    label = invoice.number or invoice.id
    amount = invoice.amount_paid or invoice.total
    greeting = f"Hello {customer.name}," if customer.name else "Hello,"
    body = (
        f"{greeting}\n\n"
        f"we received your payment of {format_money(amount, invoice.currency)} "
        f"for invoice {label}. Thank you!\n"
    )
    if invoice.hosted_url:
        body += f"\nThe invoice: {invoice.hosted_url}\n"
    # keyed by invoice: one confirmation per paid invoice, however many events say so
    return Notification(
        id=f"invoice_paid:{invoice.id}",
        to=to,
        subject=f"Payment received for invoice {label}",
        body=body,
    )


def _ticket_answered(event: TicketUpdated, customer: Customer, to: str) -> Notification:
    ticket_id = event.ticket.id if event.ticket else event.ticket_id
    subject = event.ticket.subject if event.ticket else None
    greeting = f"Hello {customer.name}," if customer.name else "Hello,"
    about = f" about “{subject}”" if subject else ""
    return Notification(
        id=f"ticket_answered:{event.event_id}",
        to=to,
        subject=f"New reply to your request #{ticket_id}",
        body=f"{greeting}\n\nour support team replied to your request #{ticket_id}{about}.\n",
    )


def ticket_received(event: TicketUpdated, customer: Customer, to: str) -> Notification | None:
    """The confirmation of a request the gateway kept while the help desk was away."""
    ticket = event.ticket
    if ticket is None:
        return None
    greeting = f"Hello {customer.name}," if customer.name else "Hello,"
    return Notification(
        # keyed by the delivery: one confirmation, however often its delivery is repeated
        id=f"ticket_received:{event.event_id}",
        to=to,
        subject=f"We received your request #{ticket.id}",
        body=(
            f"{greeting}\n\nyour request “{ticket.subject}” reached our support team as "
            f"#{ticket.id}. We will reply as soon as we can.\n"
        ),
    )


def notifications_for(event: DomainEvent, customer: Customer) -> list[Notification]:
    """What the customer is told about this event (nothing for most events)."""
    if not customer.email:
        return []
    if isinstance(event, InvoicePaid) and event.invoice is not None:
        return [_invoice_paid(event.invoice, customer, customer.email)]
    if isinstance(event, TicketUpdated) and event.answered:
        return [_ticket_answered(event, customer, customer.email)]
    if isinstance(event, TicketUpdated) and event.received:
        received = ticket_received(event, customer, customer.email)
        return [received] if received else []
    return []


def wants_notification(event: DomainEvent) -> bool:
    """Whether `notifications_for` may answer something (before looking up the customer)."""
    return (isinstance(event, InvoicePaid) and event.invoice is not None) or (
        isinstance(event, TicketUpdated) and (event.answered or event.received)
    )


class Notifier(Protocol):
    name: str

    async def send(self, notification: Notification) -> None:
        """Send it; raises when it was not accepted (the caller retries)."""
        ...

    async def aclose(self) -> None: ...


class LogNotifier:
    """Development: each notification becomes a log line."""

    name = "log"

    def __init__(self) -> None:
        self.sent: list[Notification] = []

    async def send(self, notification: Notification) -> None:
        self.sent.append(notification)
        log.info(
            "notification",
            extra={"notification_id": notification.id, "subject": notification.subject},
        )

    async def aclose(self) -> None:
        return None


def _email(notification: Notification, sender: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = notification.to
    message["Subject"] = notification.subject
    # the same id on a resend lets mail systems recognise a duplicate
    digest = hashlib.sha256(notification.id.encode()).hexdigest()[:32]
    message["Message-ID"] = f"<{digest}@portal-gateway>"
    message.set_content(notification.body)
    return message


class SmtpNotifier:
    """SMTP_URL: `smtp://[user:password@]host[:port]` (STARTTLS when the server offers it;
    `?starttls=require` refuses a server that does not), or `smtps://` (TLS from the start)."""

    name = "smtp"

    def __init__(self, url: str, sender: str, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("SMTP_URL must look like smtp://user:password@host:587 or smtps://…")
        self.tls = parts.scheme == "smtps"
        self.host = parts.hostname
        self.port = parts.port or (465 if self.tls else 25)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.starttls = parse_qs(parts.query).get("starttls", ["auto"])[0]
        self.sender = sender
        self.timeout = timeout

    async def send(self, notification: Notification) -> None:
        await asyncio.to_thread(self._send, _email(notification, self.sender))

    def _send(self, message: EmailMessage) -> None:
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if self.tls:
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        with smtp:
            smtp.ehlo()
            if not self.tls and (self.starttls == "require" or smtp.has_extn("starttls")):
                smtp.starttls(context=context)
                smtp.ehlo()
            if self.username is not None:
                smtp.login(self.username, self.password or "")
            smtp.send_message(message)

    async def aclose(self) -> None:
        return None


class SesNotifier:
    name = "ses"

    def __init__(self, sender: str, region: str, endpoint_url: str | None = None) -> None:
        self.sender = sender
        # boto3 also honours AWS_ENDPOINT_URL_SES
        self._client: Any = boto3.client("ses", region_name=region, endpoint_url=endpoint_url)

    async def send(self, notification: Notification) -> None:
        await asyncio.to_thread(
            self._client.send_email,
            Source=self.sender,
            Destination={"ToAddresses": [notification.to]},
            Message={
                "Subject": {"Data": notification.subject, "Charset": "UTF-8"},
                "Body": {"Text": {"Data": notification.body, "Charset": "UTF-8"}},
            },
        )

    async def aclose(self) -> None:
        await asyncio.to_thread(self._client.close)


def build_notifier(settings: Settings) -> Notifier:
    if settings.notify_backend == "smtp":
        if not settings.smtp_url:
            raise ValueError("NOTIFY_BACKEND=smtp needs SMTP_URL (e.g. smtp://user:pass@host:587)")
        return SmtpNotifier(settings.smtp_url, settings.notify_from)
    if settings.notify_backend == "ses":
        return SesNotifier(settings.notify_from, settings.aws_region)
    return LogNotifier()
