"""The SQS bus: boto3 calls in a thread (asyncio.to_thread), never on the event loop.

Redelivery is SQS's own: a received message stays invisible for `redelivery_timeout`
seconds (its VisibilityTimeout) and comes back if it was not deleted by then.
`ApproximateReceiveCount` is the delivery's attempt number. Dead letters go to
SQS_DEAD_LETTER_URL (or, where that is unset, to the error log) with the reason.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
from typing import Any

import boto3

from gateway.domain import DomainEvent
from gateway.encryption import DataCipher
from gateway.events.bus import Delivery
from gateway.events.codec import UNREADABLE, open_event, seal_event

__all__ = ["SqsBus"]

log = logging.getLogger(__name__)


class SqsBus:
    name = "sqs"

    def __init__(
        self,
        queue_url: str,
        *,
        region: str,
        cipher: DataCipher,
        dead_letter_url: str | None = None,
        endpoint_url: str | None = None,
        redelivery_timeout: float = 60.0,
    ) -> None:
        self.queue_url = queue_url
        self.cipher = cipher
        self.dead_letter_url = dead_letter_url
        self.visibility_timeout = max(1, math.ceil(redelivery_timeout))
        # boto3 also honours AWS_ENDPOINT_URL_SQS, which is how a worker finds a local SQS
        self._client: Any = boto3.client("sqs", region_name=region, endpoint_url=endpoint_url)
        self._fifo = queue_url.endswith(".fifo")

    def _send_kwargs(self, event: DomainEvent) -> dict[str, Any]:
        if not self._fifo:
            return {}
        return {
            "MessageGroupId": event.customer_id or "events",
            "MessageDeduplicationId": event.event_id[:128],
        }

    def _body(self, queue_url: str, event: DomainEvent) -> str:
        """A message body is text: the sealed event (queue URL as associated data), base64."""
        return base64.b64encode(seal_event(self.cipher, queue_url, event)).decode()

    async def publish(self, event: DomainEvent) -> None:
        await asyncio.to_thread(
            self._client.send_message,
            QueueUrl=self.queue_url,
            MessageBody=self._body(self.queue_url, event),
            **self._send_kwargs(event),
        )

    async def receive(
        self, consumer: str, max_messages: int = 10, wait: float = 1.0
    ) -> list[Delivery]:
        response = await asyncio.to_thread(
            self._client.receive_message,
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=max(1, min(max_messages, 10)),
            WaitTimeSeconds=max(0, min(round(wait), 20)),
            VisibilityTimeout=self.visibility_timeout,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        deliveries: list[Delivery] = []
        for message in response.get("Messages", []):
            attempt = int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1))
            body: str = message["Body"]
            try:
                event = open_event(self.cipher, self.queue_url, base64.b64decode(body))
            except (*UNREADABLE, binascii.Error) as error:
                log.error("undecodable message dead-lettered", extra={"sqs": message["MessageId"]})
                await self._move_aside(body, f"undecodable: {error}", message["ReceiptHandle"])
                continue
            deliveries.append(
                Delivery(message["MessageId"], event, attempt, message["ReceiptHandle"])
            )
        return deliveries

    async def ack(self, delivery: Delivery) -> None:
        await asyncio.to_thread(
            self._client.delete_message, QueueUrl=self.queue_url, ReceiptHandle=delivery.receipt
        )

    async def release(self, delivery: Delivery) -> None:
        await asyncio.to_thread(
            self._client.change_message_visibility,
            QueueUrl=self.queue_url,
            ReceiptHandle=delivery.receipt,
            VisibilityTimeout=0,
        )

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        body = self._body(self.dead_letter_url or self.queue_url, delivery.event)
        await self._move_aside(body, reason, delivery.receipt)

    async def _move_aside(self, body: str, reason: str, receipt: str) -> None:
        if self.dead_letter_url:
            await asyncio.to_thread(
                self._client.send_message,
                QueueUrl=self.dead_letter_url,
                MessageBody=body,
                MessageAttributes={"reason": {"DataType": "String", "StringValue": reason[:1000]}},
                **({"MessageGroupId": "dead"} if self.dead_letter_url.endswith(".fifo") else {}),
            )
        else:
            log.error(
                "dead letter (SQS_DEAD_LETTER_URL is unset)", extra={"body": body, "reason": reason}
            )
        await asyncio.to_thread(
            self._client.delete_message, QueueUrl=self.queue_url, ReceiptHandle=receipt
        )

    async def erase_customer(self, customer_id: str) -> int:
        return 0  # a queue deletes only what it handed out (EventBus.erase_customer)

    async def oldest_age(self) -> float | None:
        # SQS's queue attributes hold no age: CloudWatch's ApproximateAgeOfOldestMessage does
        return None

    async def aclose(self) -> None:
        await asyncio.to_thread(self._client.close)
