"""The sandbox gateway's own state and rules: trades, refunds and the notifications it owes.

The gateway is a separate process from KnowPay (the channel's side of the wire), so it keeps its own
SQLite file and never touches KnowPay's tables. One connection behind a lock makes it thread-safe;
`BEGIN IMMEDIATE` keeps a second process (a restarted gateway) from interleaving writes.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from knowpay.domain.money import apply_rate_bps
from knowpay.sandbox import isoformat

SCHEMA = """
CREATE TABLE IF NOT EXISTS trades (
    trade_no        TEXT PRIMARY KEY,
    merchant_id     TEXT NOT NULL,
    out_trade_no    TEXT NOT NULL,
    amount          INTEGER NOT NULL CHECK (amount > 0),
    currency        TEXT NOT NULL,
    subject         TEXT NOT NULL,
    notify_url      TEXT NOT NULL,
    return_url      TEXT NOT NULL,
    status          TEXT NOT NULL,
    created_at      REAL NOT NULL,
    expires_at      REAL NOT NULL,
    decided_at      REAL,
    paid_at         REAL,
    fee             INTEGER NOT NULL DEFAULT 0,
    amount_refunded INTEGER NOT NULL DEFAULT 0 CHECK (amount_refunded <= amount),
    fee_refunded    INTEGER NOT NULL DEFAULT 0,
    channel         TEXT NOT NULL DEFAULT 'sandbox',
    extra           TEXT NOT NULL DEFAULT '{}',
    UNIQUE (merchant_id, out_trade_no)
);
CREATE INDEX IF NOT EXISTS trades_by_paid_at ON trades (merchant_id, paid_at);
CREATE TABLE IF NOT EXISTS refunds (
    refund_no     TEXT PRIMARY KEY,
    merchant_id   TEXT NOT NULL,
    out_refund_no TEXT NOT NULL,
    trade_no      TEXT NOT NULL REFERENCES trades (trade_no),
    amount        INTEGER NOT NULL CHECK (amount > 0),
    fee           INTEGER NOT NULL,
    reason        TEXT,
    status        TEXT NOT NULL,
    refunded_at   REAL NOT NULL,
    UNIQUE (merchant_id, out_refund_no)
);
CREATE INDEX IF NOT EXISTS refunds_by_refunded_at ON refunds (merchant_id, refunded_at);
CREATE TABLE IF NOT EXISTS notifications (
    notify_id       TEXT PRIMARY KEY,
    merchant_id     TEXT NOT NULL,
    trade_no        TEXT NOT NULL,
    channel         TEXT NOT NULL DEFAULT 'sandbox',
    url             TEXT NOT NULL,
    body            TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      REAL NOT NULL,
    next_attempt_at REAL,
    last_error      TEXT,
    delivered_at    REAL
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications (status, next_attempt_at);
"""


class TradeStatus(StrEnum):
    WAIT_BUYER_PAY = "WAIT_BUYER_PAY"
    SUCCESS = "SUCCESS"
    DECLINED = "DECLINED"
    CLOSED = "CLOSED"


REFUND_SUCCESS = "REFUND_SUCCESS"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class GatewayError(Exception):
    """A request the gateway refuses; `status` is the HTTP status and `code` a stable reason."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Trade:
    trade_no: str
    merchant_id: str
    out_trade_no: str
    amount: int
    currency: str
    subject: str
    notify_url: str
    return_url: str
    status: str
    created_at: float
    expires_at: float
    decided_at: float | None
    paid_at: float | None
    fee: int
    amount_refunded: int
    fee_refunded: int
    channel: str = "sandbox"  # whose wire format the gateway speaks for this trade
    extra: str = "{}"  # channel-specific facts as JSON (buyer id, installments, intent secret...)


@dataclass(frozen=True)
class Refund:
    refund_no: str
    merchant_id: str
    out_refund_no: str
    trade_no: str
    amount: int
    fee: int
    reason: str | None
    status: str
    refunded_at: float


@dataclass(frozen=True)
class Delivery:
    """One notification the gateway owes a merchant, and how its delivery is going."""

    notify_id: str
    merchant_id: str
    trade_no: str
    channel: str
    url: str
    body: str
    status: str
    attempts: int
    created_at: float
    next_attempt_at: float | None
    last_error: str | None
    delivered_at: float | None


@dataclass(frozen=True)
class BillEntry:
    """A successful payment or refund of one day, as the bill lists it."""

    kind: str  # payment | refund
    trade: Trade
    refund: Refund | None
    amount: int
    status: str
    occurred_at: float
    fee: int


def _new_number(prefix: str) -> str:
    # Unguessable: the pay page's URL is the only thing that lets a browser pay a trade.
    return f"{prefix}{secrets.token_hex(12)}"


def payment_notification(trade: Trade, notify_id: str) -> dict:
    return {"notify_id": notify_id, "type": "payment", "merchant_id": trade.merchant_id,
            "out_trade_no": trade.out_trade_no, "trade_no": trade.trade_no, "status": trade.status,
            "amount": trade.amount, "currency": trade.currency, "paid_at": isoformat(trade.paid_at),
            "decided_at": isoformat(trade.decided_at)}


def refund_notification(trade: Trade, refund: Refund, notify_id: str) -> dict:
    return {"notify_id": notify_id, "type": "refund", "merchant_id": trade.merchant_id,
            "out_trade_no": trade.out_trade_no, "trade_no": trade.trade_no, "status": refund.status,
            "amount": refund.amount, "currency": trade.currency, "paid_at": isoformat(trade.paid_at),
            "out_refund_no": refund.out_refund_no, "refund_no": refund.refund_no,
            "refunded_at": isoformat(refund.refunded_at)}


class SandboxStore:
    """Every read and write of the gateway's state; each public method is one transaction."""

    def __init__(self, path: Path, *, fee_bps: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.fee_bps = fee_bps
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self._lock:
            self._db.executescript(SCHEMA)  # every statement is IF NOT EXISTS: safe on each start

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- trades ------------------------------------------------------------------------------------

    def create_trade(self, merchant_id: str, *, out_trade_no: str, amount: int, currency: str, subject: str,
                     notify_url: str, return_url: str, expires_at: float, now: float, channel: str = "sandbox",
                     extra: dict | None = None) -> tuple[Trade, bool]:
        """Open a trade, or return the one already open for this out_trade_no → (trade, created)."""
        with self._transaction() as db:
            existing = self._trade_by_out_no(db, merchant_id, out_trade_no, now)
            if existing is not None:
                if (existing.amount, existing.currency) != (amount, currency):
                    raise GatewayError(409, "out_trade_no_conflict",
                                       f"out_trade_no {out_trade_no!r} is already a trade of "
                                       f"{existing.amount} {existing.currency}")
                return existing, False
            trade_no = _new_number("sbx")
            db.execute(
                "INSERT INTO trades (trade_no, merchant_id, out_trade_no, amount, currency, subject,"
                " notify_url, return_url, status, created_at, expires_at, channel, extra)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (trade_no, merchant_id, out_trade_no, amount, currency, subject, notify_url, return_url,
                 TradeStatus.WAIT_BUYER_PAY, now, expires_at, channel, json.dumps(extra or {})))
            return self._known_trade(db, trade_no, now), True

    def trade(self, trade_no: str, *, now: float) -> Trade | None:
        with self._transaction() as db:
            return self._trade(db, trade_no, now)

    def find_trade(self, merchant_id: str, out_trade_no: str, *, now: float) -> Trade | None:
        with self._transaction() as db:
            return self._trade_by_out_no(db, merchant_id, out_trade_no, now)

    def trades_since(self, merchant_id: str, *, channel: str, start: float, now: float) -> list[Trade]:
        """One merchant's trades of one channel opened at or after `start`, newest first (Stripe lists them)."""
        with self._transaction() as db:
            rows = db.execute("SELECT trade_no FROM trades WHERE merchant_id = ? AND channel = ? AND created_at >= ?"
                              " ORDER BY created_at DESC, trade_no DESC", (merchant_id, channel, start)).fetchall()
            return [self._known_trade(db, row["trade_no"], now) for row in rows]

    def decide(self, trade_no: str, result: str, *, now: float, merchant_id: str | None = None) -> Trade:
        """The buyer pays or declines; the first decision wins and queues its notification.

        Repeating the same decision returns the trade unchanged; any other change of mind, or a
        closed or expired trade, is a 409.
        """
        target = {"pay": TradeStatus.SUCCESS, "decline": TradeStatus.DECLINED}[result]
        with self._transaction() as db:
            trade = self._trade(db, trade_no, now)
            if trade is None or (merchant_id is not None and trade.merchant_id != merchant_id):
                raise GatewayError(404, "trade_not_found", "no such trade")
            if trade.status == target:
                return trade
            if trade.status != TradeStatus.WAIT_BUYER_PAY:
                raise GatewayError(409, "trade_not_payable", f"the trade is {trade.status}")
            paid_at = now if target == TradeStatus.SUCCESS else None
            fee = apply_rate_bps(trade.amount, self.fee_bps) if target == TradeStatus.SUCCESS else 0
            moved = db.execute(
                "UPDATE trades SET status = ?, decided_at = ?, paid_at = ?, fee = ?"
                " WHERE trade_no = ? AND status = ?",
                (target, now, paid_at, fee, trade_no, TradeStatus.WAIT_BUYER_PAY))
            if moved.rowcount != 1:  # cannot happen under BEGIN IMMEDIATE; refuse rather than notify twice
                raise GatewayError(409, "trade_not_payable", "the trade changed meanwhile")
            trade = self._known_trade(db, trade_no, now)
            notify_id = _new_number("sbn")
            self._enqueue(db, notify_id, trade, trade.notify_url, payment_notification(trade, notify_id), now)
            return trade

    def close_trade(self, merchant_id: str, out_trade_no: str, *, now: float) -> Trade | None:
        """Close a trade still waiting for the buyer; any other trade is returned as it is."""
        with self._transaction() as db:
            trade = self._trade_by_out_no(db, merchant_id, out_trade_no, now)
            if trade is None or trade.status != TradeStatus.WAIT_BUYER_PAY:
                return trade
            db.execute("UPDATE trades SET status = ?, decided_at = ? WHERE trade_no = ? AND status = ?",
                       (TradeStatus.CLOSED, now, trade.trade_no, TradeStatus.WAIT_BUYER_PAY))
            return self._known_trade(db, trade.trade_no, now)

    # -- refunds -----------------------------------------------------------------------------------

    def create_refund(self, merchant_id: str, *, out_trade_no: str, out_refund_no: str, amount: int,
                      reason: str | None, notify_url: str | None, now: float) -> tuple[Refund, Trade, bool]:
        """Refund part or all of what is left of a paid trade, at once → (refund, trade, created).

        Idempotent on out_refund_no: a repeat returns the first refund; the same number for another
        trade or amount is a 409.
        """
        with self._transaction() as db:
            refund = self._refund_by_out_no(db, merchant_id, out_refund_no)
            if refund is not None:
                refunded_trade = self._known_trade(db, refund.trade_no, now)
                if refunded_trade.out_trade_no != out_trade_no or refund.amount != amount:
                    raise GatewayError(409, "out_refund_no_conflict",
                                       f"out_refund_no {out_refund_no!r} is already a refund of "
                                       f"{refund.amount} on {refunded_trade.out_trade_no!r}")
                return refund, refunded_trade, False
            found = self._trade_by_out_no(db, merchant_id, out_trade_no, now)
            if found is None:
                raise GatewayError(404, "trade_not_found", f"no trade {out_trade_no!r}")
            trade = found
            if trade.status != TradeStatus.SUCCESS:
                raise GatewayError(409, "trade_not_paid", f"the trade is {trade.status}, not paid")
            left = trade.amount - trade.amount_refunded
            if amount > left:
                raise GatewayError(409, "refund_exceeds_trade",
                                   f"refund of {amount} is more than the {left} left of the trade")
            # The fee goes back at the same rate (half up), but never more than was taken, and the
            # refund that empties the trade returns all that is left of it.
            refunded = trade.amount_refunded + amount
            fee_left = trade.fee - trade.fee_refunded
            fee_back = (fee_left if refunded == trade.amount
                        else min(apply_rate_bps(amount, self.fee_bps), fee_left))
            refund_no = _new_number("sbr")
            db.execute(
                "INSERT INTO refunds (refund_no, merchant_id, out_refund_no, trade_no, amount, fee, reason,"
                " status, refunded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (refund_no, merchant_id, out_refund_no, trade.trade_no, amount, fee_back, reason,
                 REFUND_SUCCESS, now))
            db.execute("UPDATE trades SET amount_refunded = ?, fee_refunded = fee_refunded + ?"
                       " WHERE trade_no = ?", (refunded, fee_back, trade.trade_no))
            refund = self._refund(db, refund_no)
            trade = self._known_trade(db, trade.trade_no, now)
            notify_id = _new_number("sbn")
            self._enqueue(db, notify_id, trade, notify_url or trade.notify_url,
                          refund_notification(trade, refund, notify_id), now)
            return refund, trade, True

    def find_refund(self, merchant_id: str, out_refund_no: str, *, now: float) -> tuple[Refund, Trade] | None:
        with self._transaction() as db:
            refund = self._refund_by_out_no(db, merchant_id, out_refund_no)
            return None if refund is None else (refund, self._known_trade(db, refund.trade_no, now))

    # -- bills -------------------------------------------------------------------------------------

    def bill(self, merchant_id: str, *, start: float, end: float, now: float) -> list[BillEntry]:
        """Payments that succeeded and refunds made in [start, end), in time order."""
        with self._transaction() as db:
            entries = []
            for row in db.execute(
                    "SELECT * FROM trades WHERE merchant_id = ? AND status = ?"
                    " AND paid_at >= ? AND paid_at < ?",
                    (merchant_id, TradeStatus.SUCCESS, start, end)):
                trade = self._trade_from(row)
                entries.append(BillEntry("payment", trade, None, trade.amount, trade.status,
                                         row["paid_at"], trade.fee))
            for row in db.execute(
                    "SELECT * FROM refunds WHERE merchant_id = ? AND refunded_at >= ? AND refunded_at < ?",
                    (merchant_id, start, end)):
                refund = Refund(**dict(row))
                entries.append(BillEntry("refund", self._known_trade(db, refund.trade_no, now), refund,
                                         refund.amount, refund.status, refund.refunded_at, refund.fee))
        return sorted(entries, key=lambda e: (e.occurred_at, e.kind))

    # -- notifications -----------------------------------------------------------------------------

    def claim_due(self, *, now: float, lease: float, limit: int) -> list[Delivery]:
        """Take the notifications due now, pushing their next attempt `lease` seconds away, so that a
        sender that dies mid-way is retried after the lease and two senders never share one attempt."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT notify_id FROM notifications WHERE status = ? AND next_attempt_at <= ?"
                " ORDER BY next_attempt_at LIMIT ?", (DeliveryStatus.PENDING, now, limit)).fetchall()
            claimed = []
            for row in rows:
                db.execute("UPDATE notifications SET attempts = attempts + 1, next_attempt_at = ?"
                           " WHERE notify_id = ?", (now + lease, row["notify_id"]))
                claimed.append(self._delivery(db, row["notify_id"]))
            return claimed

    def record_delivered(self, notify_id: str, *, now: float) -> None:
        with self._transaction() as db:
            db.execute("UPDATE notifications SET status = ?, delivered_at = ?, next_attempt_at = NULL,"
                       " last_error = NULL WHERE notify_id = ?", (DeliveryStatus.DELIVERED, now, notify_id))

    def record_failure(self, notify_id: str, error: str, *, retry_at: float | None) -> None:
        """A failed attempt: try again at `retry_at`, or give up for good when it is None."""
        with self._transaction() as db:
            db.execute("UPDATE notifications SET status = ?, next_attempt_at = ?, last_error = ?"
                       " WHERE notify_id = ?",
                       (DeliveryStatus.PENDING if retry_at is not None else DeliveryStatus.FAILED, retry_at,
                        error[:500], notify_id))

    def next_due(self) -> float | None:
        """When the earliest pending notification is due, or None when nothing is owed."""
        with self._lock:
            row = self._db.execute("SELECT MIN(next_attempt_at) FROM notifications WHERE status = ?",
                                   (DeliveryStatus.PENDING,)).fetchone()
        return row[0]

    def deliveries(self, trade_no: str | None = None) -> list[Delivery]:
        """The notifications of one trade (or all), oldest first: what an operator looks at."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM notifications WHERE ? IS NULL OR trade_no = ? ORDER BY created_at, notify_id",
                (trade_no, trade_no)).fetchall()
        return [Delivery(**dict(row)) for row in rows]

    # -- rows --------------------------------------------------------------------------------------

    def _enqueue(self, db: sqlite3.Connection, notify_id: str, trade: Trade, url: str, payload: dict,
                 now: float) -> None:
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        db.execute("INSERT INTO notifications (notify_id, merchant_id, trade_no, channel, url, body, status,"
                   " created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (notify_id, trade.merchant_id, trade.trade_no, trade.channel, url, body,
                    DeliveryStatus.PENDING, now, now))

    def _known_trade(self, db: sqlite3.Connection, trade_no: str, now: float) -> Trade:
        trade = self._trade(db, trade_no, now)
        if trade is None:
            raise LookupError(f"trade {trade_no} vanished inside its own transaction")
        return trade

    def _trade(self, db: sqlite3.Connection, trade_no: str, now: float) -> Trade | None:
        row = db.execute("SELECT * FROM trades WHERE trade_no = ?", (trade_no,)).fetchone()
        return None if row is None else self._expired(db, self._trade_from(row), now)

    def _trade_by_out_no(self, db: sqlite3.Connection, merchant_id: str, out_trade_no: str,
                         now: float) -> Trade | None:
        row = db.execute("SELECT * FROM trades WHERE merchant_id = ? AND out_trade_no = ?",
                         (merchant_id, out_trade_no)).fetchone()
        return None if row is None else self._expired(db, self._trade_from(row), now)

    def _expired(self, db: sqlite3.Connection, trade: Trade, now: float) -> Trade:
        """A trade nobody paid before it expired is closed the first time anyone looks at it."""
        if trade.status != TradeStatus.WAIT_BUYER_PAY or trade.expires_at > now:
            return trade
        db.execute("UPDATE trades SET status = ?, decided_at = ? WHERE trade_no = ? AND status = ?",
                   (TradeStatus.CLOSED, trade.expires_at, trade.trade_no, TradeStatus.WAIT_BUYER_PAY))
        row = db.execute("SELECT * FROM trades WHERE trade_no = ?", (trade.trade_no,)).fetchone()
        return self._trade_from(row)

    @staticmethod
    def _trade_from(row: sqlite3.Row) -> Trade:
        return Trade(**dict(row))

    def _refund(self, db: sqlite3.Connection, refund_no: str) -> Refund:
        row = db.execute("SELECT * FROM refunds WHERE refund_no = ?", (refund_no,)).fetchone()
        return Refund(**dict(row))

    def _refund_by_out_no(self, db: sqlite3.Connection, merchant_id: str,
                          out_refund_no: str) -> Refund | None:
        row = db.execute("SELECT * FROM refunds WHERE merchant_id = ? AND out_refund_no = ?",
                         (merchant_id, out_refund_no)).fetchone()
        return None if row is None else Refund(**dict(row))

    def _delivery(self, db: sqlite3.Connection, notify_id: str) -> Delivery:
        return Delivery(**dict(db.execute("SELECT * FROM notifications WHERE notify_id = ?",
                                          (notify_id,)).fetchone()))
