"""Deliver the gateway's notifications to merchants, retrying with backoff until one is acknowledged.

A notification is acknowledged only by HTTP 200 with the body `success`; anything else is tried
again after 1 s, 2 s, 5 s, 10 s, 30 s, 60 s and then every 5 minutes, for up to 24 hours. The queue
lives in the sandbox store, so a restarted gateway carries on where it stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Protocol
from concurrent.futures import ThreadPoolExecutor

import requests

from knowpay.sandbox import signed_headers
from knowpay.sandbox.store import Delivery, SandboxStore

log = logging.getLogger(__name__)

RETRY_DELAYS = (1, 2, 5, 10, 30, 60)
RETRY_EVERY = 300
GIVE_UP_AFTER = 24 * 3600
# A claimed notification whose sender vanished (process killed mid-send) is due again after this.
CLAIM_LEASE = 60
BATCH = 50
TIMEOUT = (3.05, 10.0)
ACKNOWLEDGED_BODY = "success"


def retry_delay(attempts: int) -> int:
    """Seconds to wait after the `attempts`-th failed attempt (1-based)."""
    return RETRY_DELAYS[attempts - 1] if attempts <= len(RETRY_DELAYS) else RETRY_EVERY


class WireFormat(Protocol):
    """How one channel's notifications look on the wire; rendered at each attempt, so signatures
    and timestamps are always fresh."""

    def render(self, delivery: Delivery, now: float) -> tuple[bytes, dict[str, str]]: ...

    def acknowledged(self, status: int, text: str) -> bool: ...


class SandboxFormat:
    """The sandbox's own format: JSON signed with HMAC-SHA256, acknowledged by 200 `success`."""

    def __init__(self, merchant_secrets: Mapping[str, str]) -> None:
        self._secrets = dict(merchant_secrets)

    def render(self, delivery: Delivery, now: float) -> tuple[bytes, dict[str, str]]:
        secret = self._secrets.get(delivery.merchant_id)
        if secret is None:
            raise LookupError(f"no secret for merchant {delivery.merchant_id!r}")
        body = delivery.body.encode("utf-8")
        return body, {"Content-Type": "application/json",
                      **signed_headers(delivery.merchant_id, secret, body, now=now)}

    def acknowledged(self, status: int, text: str) -> bool:
        return status == 200 and text == ACKNOWLEDGED_BODY


class Notifier:
    """Sends due notifications: call `deliver_due()` yourself, or `start()` a background thread."""

    def __init__(self, store: SandboxStore, formats: Mapping[str, WireFormat], *,
                 clock: Callable[[], float] = time.time, workers: int = 4) -> None:
        self.store = store
        # Looked up at each attempt: channel gateways add their formats after the notifier is built.
        self.formats = formats
        self._clock = clock
        self._http = requests.Session()
        # Merchants are reached directly: a proxy from the environment would not know 127.0.0.1.
        self._http.trust_env = False
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox-notify")
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def deliver_due(self, *, now: float | None = None) -> int:
        """Attempt every notification due at `now` (default: the clock) once → how many were acknowledged.

        `now` only decides what is due (tests pass a later time to skip the backoff); signatures
        always carry the real time, so the merchant accepts them.
        """
        moment = self._clock() if now is None else now
        acknowledged = 0
        while True:
            claimed = self.store.claim_due(now=moment, lease=CLAIM_LEASE, limit=BATCH)
            if not claimed:
                return acknowledged
            acknowledged += sum(self._pool.map(lambda d: self._attempt(d, moment), claimed))
            if len(claimed) < BATCH:
                return acknowledged

    def _attempt(self, delivery: Delivery, moment: float) -> bool:
        error = self._send(delivery)
        if error is None:
            self.store.record_delivered(delivery.notify_id, now=self._clock())
            return True
        retry_at = moment + retry_delay(delivery.attempts)
        if retry_at > delivery.created_at + GIVE_UP_AFTER:
            log.warning("notification %s to %s given up after %d attempts: %s", delivery.notify_id,
                        delivery.url, delivery.attempts, error)
            self.store.record_failure(delivery.notify_id, error, retry_at=None)
        else:
            log.info("notification %s to %s not acknowledged (%s); retry in %d s", delivery.notify_id,
                     delivery.url, error, retry_delay(delivery.attempts))
            self.store.record_failure(delivery.notify_id, error, retry_at=retry_at)
        return False

    def _send(self, delivery: Delivery) -> str | None:
        """POST one notification → None when acknowledged, else why not."""
        wire = self.formats.get(delivery.channel)
        if wire is None:
            return f"no wire format for channel {delivery.channel!r}"
        try:
            body, headers = wire.render(delivery, time.time())
        except LookupError as exc:
            return str(exc)
        try:
            answer = self._http.post(delivery.url, data=body, headers=headers, timeout=TIMEOUT,
                                     allow_redirects=False)
        except requests.RequestException as exc:
            return f"{exc.__class__.__name__}: {exc}"
        if wire.acknowledged(answer.status_code, answer.text):
            return None
        return f"HTTP {answer.status_code}: {answer.text[:200]!r}"

    # -- the background thread ---------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sandbox-notifier", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        """Something was queued: send it now rather than at the next poll."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                self.deliver_due()
                due = self.store.next_due()
            except Exception:  # keep the thread alive: a bad row or a locked file must not stop delivery
                log.exception("sandbox notifier pass failed")
                due = None
            # Poll at least every second too, in case another gateway process queued something.
            wait = 1.0 if due is None else min(1.0, max(0.0, due - self._clock()))
            self._wake.wait(wait)
