"""A webhook receiver for the gateway: checks both signatures, refuses stale or replayed
deliveries, and keeps each instance's latest status by sequence number.

    pip install standardwebhooks==1.1.0
    WEBHOOK_SECRET=the-gateways-secret python docs/webhook_receiver.py 8080

Then create instances with "webhookUrl": "http://<this host>:8080/hook". The end-to-end tests
use `verify` and `Receiver` from this file, so what the README shows is what is tested.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


class Rejected(Exception):
    """Not from the gateway, altered, or too old to trust (a replay)."""


def verify(body: bytes, headers, secret: str) -> dict:
    """The payload of an authentic, fresh delivery; raises Rejected otherwise.

    Standard Webhooks: `webhook-signature` signs "{webhook-id}.{webhook-timestamp}.{body}", and
    the library refuses a timestamp more than 5 minutes away from now, so a captured delivery
    cannot be replayed later. A `whsec_...` secret is base64 as the standard says; any other
    secret is used as its UTF-8 bytes. The contract's `X-Signature-SHA256` (HMAC-SHA256 of the
    raw body) is checked too; it carries no timestamp, so on its own it cannot stop replays.
    """
    headers = {k.lower(): v for k, v in dict(headers).items()}
    key = secret if secret.startswith("whsec_") else secret.encode()
    try:
        payload = Webhook(key).verify(body, headers)
    except WebhookVerificationError as exc:
        raise Rejected(str(exc)) from None
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, headers.get("x-signature-sha256", "")):
        raise Rejected("X-Signature-SHA256 does not match")
    return payload


class Receiver:
    """What a client keeps: deliveries already seen (retries repeat the same `deliveryId`) and
    each instance's latest status, never overwritten by an older `sequence`."""

    def __init__(self):
        self.seen: set[str] = set()
        self.latest: dict[str, tuple[int, str]] = {}

    def accept(self, payload: dict) -> bool:
        """Apply one verified delivery; False when it was a duplicate or older than known."""
        if payload["deliveryId"] in self.seen:
            return False
        self.seen.add(payload["deliveryId"])
        instance, sequence = payload["instanceId"], payload["sequence"]
        if payload["event"] != "instance.status_changed":
            return True  # e.g. instance.auto_stop_warning: act on it, status is unchanged
        if sequence <= self.latest.get(instance, (0, ""))[0]:
            return False
        self.latest[instance] = (sequence, payload["status"])
        return True


def serve(port: int, secret: str) -> None:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                payload = verify(body, self.headers, secret)
            except Rejected as exc:
                self.send_response(401)  # 4xx: the gateway does not retry it
                self.end_headers()
                print("rejected:", exc, flush=True)
                return
            if receiver.accept(payload):
                print(payload["sequence"], payload["event"], payload["status"], flush=True)
            self.send_response(204)  # any 2xx counts as delivered
            self.end_headers()

    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()  # noqa: S104


if __name__ == "__main__":
    serve(int(sys.argv[1]) if len(sys.argv) > 1 else 8080, os.environ["WEBHOOK_SECRET"])
