"""The one signature scheme of Trellis's webhooks, both ways: deliveries to workflow hooks are
checked with it, alert notifications are sent with it.

``X-Trellis-Timestamp`` carries Unix seconds and ``X-Trellis-Signature`` carries ``sha256=`` + the
hex HMAC-SHA256 over ``<timestamp>.<body>``, so a receiver (an n8n Webhook node, say) can check a
delivery and refuse a replayed one.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Trellis-Signature"
TIMESTAMP_HEADER = "X-Trellis-Timestamp"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature a delivery carries: ``sha256=`` + hex HMAC-SHA256 over ``<timestamp>.<body>``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"
