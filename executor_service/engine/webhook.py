"""The approval webhook: tell an outside system that a gate opened.

Deliveries follow the Standard Webhooks specification (standardwebhooks.com, v1): a JSON
body with ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and ``webhook-signature``
(``v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``) headers, so a receiver can check
origin and freshness. Delivery is at-least-once while the worker lives: three tries with
backoff; a failure is logged, and the gate stays open (the approval API is the authority).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import httpx2
import structlog

_log = structlog.get_logger("planexec.executor.webhook")


def signature(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for a delivery (Standard Webhooks v1)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class GateWebhook:
    """POSTs ``approval.requested`` events to one URL."""

    def __init__(
        self, url: str, secret: bytes, *, timeout_s: float = 5.0, attempts: int = 3
    ) -> None:
        self._url = url
        self._secret = secret
        self._attempts = attempts
        self._client = httpx2.AsyncClient(timeout=timeout_s)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    async def deliver(self, payload: dict[str, Any]) -> bool:
        """Send one event; True once a 2xx answer came back, False after the last try."""
        body = json.dumps(payload, separators=(",", ":"), default=str).encode()
        msg_id = f"msg_{uuid.uuid4().hex}"
        for attempt in range(1, self._attempts + 1):
            timestamp = int(time.time())
            headers = {
                "content-type": "application/json",
                "webhook-id": msg_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": signature(self._secret, msg_id, timestamp, body),
            }
            try:
                response = await self._client.post(self._url, content=body, headers=headers)
                if 200 <= response.status_code < 300:
                    return True
                error = f"HTTP {response.status_code}"
            except httpx2.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            _log.warning("webhook_failed", url=self._url, attempt=attempt, error=error)
            if attempt < self._attempts:
                await asyncio.sleep(0.5 * attempt)
        return False
