"""Sliding-window velocity counters: in Redis when configured, else (and as Redis's fall-back) in the database.

Every counter is a set of members with the time each was last seen; a window's count is how many
were seen inside it. An attempt is a member of its own (so attempts are counted one by one), an
instrument or an account is a member by its id (so they are counted distinctly). Recording and
counting are one atomic step in every store, so concurrent attempts each see the ones before them.
`begin` sends that step and returns a callable for its answer: Redis works on it while the caller
reads the buyer's history from the database.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Protocol

from redis.exceptions import NoScriptError
from sqlalchemy import and_, bindparam, case, distinct, func, insert, or_, select, text
from sqlalchemy.orm import Session

from knowpay.db import Database
from knowpay.risk.models import RiskCounterEvent

log = logging.getLogger(__name__)

ATTEMPT_WINDOWS = (60, 600, 3600, 86400)
FAILURE_WINDOWS = (600, 3600, 86400)
INSTRUMENT_WINDOWS = (3600, 86400)
ACCOUNT_WINDOWS = (86400, 2592000)
WINDOWS = {"attempts": ATTEMPT_WINDOWS, "failures": FAILURE_WINDOWS, "instruments": INSTRUMENT_WINDOWS,
           "accounts": ACCOUNT_WINDOWS}
KEEP_SECONDS = max(ACCOUNT_WINDOWS)
SHORT_KEEP_SECONDS = max(ATTEMPT_WINDOWS)
LINKED_LIMIT = 50
# Families whose counters are read over at most a day; the others (accounts) over thirty.
SHORT_FAMILIES = ("att", "fail", "ins")


@dataclass(frozen=True)
class Hit:
    """Record `member` under `key` now, then count the key over `windows`."""

    key: str
    member: str
    windows: tuple[int, ...]


@dataclass(frozen=True)
class Read:
    """Count `key` over `windows` without recording anything."""

    key: str
    windows: tuple[int, ...]


@dataclass(frozen=True)
class Observation:
    hits: tuple[Hit, ...] = ()
    reads: tuple[Read, ...] = ()
    # Keys whose members (account ids) seen within `linked_window` are listed.
    linked: tuple[str, ...] = ()
    linked_window: int = KEEP_SECONDS


@dataclass
class Counts:
    counts: dict[str, dict[int, int]] = field(default_factory=dict)
    members: dict[str, list[str]] = field(default_factory=dict)
    store: str = ""
    faults: list[str] = field(default_factory=list)

    def get(self, key: str, window: int) -> int:
        return self.counts.get(key, {}).get(window, 0)


# The answer to an observation already sent; called exactly once (it releases what the call holds).
Pending = Callable[[], Counts]


class CounterStore(Protocol):
    name: str

    def begin(self, observation: Observation, now: datetime) -> Pending: ...

    def observe(self, observation: Observation, now: datetime) -> Counts: ...

    def record(self, hits: Sequence[Hit], now: datetime, session: Session | None = None) -> None: ...


def _family(key: str) -> str:
    return key.split(":", 1)[0]


def _epoch(moment: datetime) -> float:
    return moment.replace(tzinfo=UTC).timestamp()


class MemoryCounters:
    """Counters in a dict: for replaying history (training, back-tests) and for unit tests."""

    name = "memory"

    def __init__(self) -> None:
        self._seen: dict[str, dict[str, datetime]] = {}
        self._lock = threading.Lock()

    def _count(self, key: str, windows: Sequence[int], now: datetime) -> dict[int, int]:
        seen = self._seen.get(key, {})
        return {w: sum(1 for at in seen.values() if at > now - timedelta(seconds=w)) for w in windows}

    def observe(self, observation: Observation, now: datetime) -> Counts:
        with self._lock:
            self._add(observation.hits, now)
            result = Counts(store=self.name)
            items: list[Hit | Read] = [*observation.hits, *observation.reads]
            for item in items:
                result.counts[item.key] = self._count(item.key, item.windows, now)
            since = now - timedelta(seconds=observation.linked_window)
            for key in observation.linked:
                seen = self._seen.get(key, {})
                result.members[key] = sorted(m for m, at in seen.items() if at > since)[:LINKED_LIMIT]
            return result

    def begin(self, observation: Observation, now: datetime) -> Pending:
        counts = self.observe(observation, now)
        return lambda: counts

    def record(self, hits: Sequence[Hit], now: datetime, session: Session | None = None) -> None:
        with self._lock:
            self._add(hits, now)

    def _add(self, hits: Sequence[Hit], now: datetime) -> None:
        for hit in hits:
            members = self._seen.setdefault(hit.key, {})
            if members.get(hit.member, datetime.min) < now:
                members[hit.member] = now

    def forget_before(self, moment: datetime) -> None:
        """Drop what no window can reach any more (a long replay stays small)."""
        with self._lock:
            for key, members in list(self._seen.items()):
                keep = {m: at for m, at in members.items() if at > moment}
                if keep:
                    self._seen[key] = keep
                else:
                    del self._seen[key]


class DbCounters:
    """Counters as rows of risk_counter_events, counted with SQL.

    PostgreSQL: an advisory lock per recorded key, held to commit, orders concurrent attempts on one
    buyer / IP / device so each counts the ones before it; the commit is asynchronous (losing the last
    few counter rows in a crash is acceptable, waiting for a disk flush on every checkout is not).
    SQLite: the write transaction (BEGIN IMMEDIATE) already orders them.
    """

    name = "database"

    def __init__(self, db: Database) -> None:
        self.db = db

    def observe(self, observation: Observation, now: datetime) -> Counts:
        with self.db.transaction() as session:
            self._write(session, observation.hits, now, lock=True)
            return self._count(session, observation, now)

    def begin(self, observation: Observation, now: datetime) -> Pending:
        counts = self.observe(observation, now)
        return lambda: counts

    def record(self, hits: Sequence[Hit], now: datetime, session: Session | None = None) -> None:
        if session is not None:
            # The caller's transaction: its durability is the caller's, so no asynchronous commit here.
            self._write(session, hits, now, lock=False, own=False)
            return
        with self.db.transaction() as own:
            self._write(own, hits, now, lock=False)

    def _write(self, session: Session, hits: Sequence[Hit], now: datetime, *, lock: bool, own: bool = True) -> None:
        if not hits:
            return
        if not self.db.is_sqlite and own:
            # One round trip: asynchronous commit for this transaction, then the keys' locks in sorted
            # order (so two attempts sharing keys never deadlock).
            session.execute(_PREPARE, {"locks": sorted({_lock_id(hit.key) for hit in hits}) if lock else []})
        session.execute(insert(RiskCounterEvent), [{"key": h.key, "member": h.member, "at": now} for h in hits])

    def _count(self, session: Session, observation: Observation, now: datetime) -> Counts:
        result = Counts(store=self.name)
        items: list[Hit | Read] = [*observation.hits, *observation.reads]
        windows = tuple(sorted({w for item in items for w in item.windows}))
        keys = sorted({item.key for item in items})
        if keys:
            params = {f"s{w}": now - timedelta(seconds=w) for w in windows}
            params.update(short=[k for k in keys if _family(k) in SHORT_FAMILIES] or [""],
                          long=[k for k in keys if _family(k) not in SHORT_FAMILIES] or [""],
                          short_since=now - timedelta(seconds=SHORT_KEEP_SECONDS),
                          long_since=now - timedelta(seconds=KEEP_SECONDS))
            found = {row[0]: row[1:] for row in session.execute(_count_statement(windows), params)}
            for item in items:
                row = found.get(item.key)
                result.counts[item.key] = {w: int(row[windows.index(w)]) if row else 0 for w in item.windows}
        if observation.linked:
            rows = session.execute(_LINKED, {"keys": list(observation.linked),
                                             "since": now - timedelta(seconds=observation.linked_window),
                                             "limit": LINKED_LIMIT * len(observation.linked)})
            for key, member in rows:
                result.members.setdefault(key, []).append(member)
            for key in observation.linked:
                result.members[key] = sorted(result.members.get(key, []))[:LINKED_LIMIT]
        return result

    def prune(self, now: datetime) -> int:
        """Delete rows no window reaches any more; the daily job calls it."""
        from sqlalchemy import delete

        with self.db.transaction() as session:
            short = session.execute(delete(RiskCounterEvent).where(
                or_(*[RiskCounterEvent.key.like(f"{family}:%") for family in SHORT_FAMILIES]),
                RiskCounterEvent.at <= now - timedelta(seconds=SHORT_KEEP_SECONDS))).rowcount
            every = session.execute(delete(RiskCounterEvent).where(
                RiskCounterEvent.at <= now - timedelta(seconds=KEEP_SECONDS))).rowcount
        return short + every


_PREPARE = text("SELECT set_config('synchronous_commit', 'off', true), "
                "(SELECT count(pg_advisory_xact_lock(k)) FROM unnest(CAST(:locks AS bigint[])) AS k)")
_LINKED = (select(RiskCounterEvent.key, RiskCounterEvent.member)
           .where(RiskCounterEvent.key.in_(bindparam("keys", expanding=True)),
                  RiskCounterEvent.at > bindparam("since"))
           .distinct().limit(bindparam("limit")))


@lru_cache(maxsize=16)
def _count_statement(windows: tuple[int, ...]):  # type: ignore[no-untyped-def]
    """Distinct members per key and window, built once per set of windows (statements are costly to build)."""
    event = RiskCounterEvent
    columns = [func.count(distinct(case((event.at > bindparam(f"s{w}"), event.member)))) for w in windows]
    return (select(event.key, *columns)
            .where(or_(and_(event.key.in_(bindparam("short", expanding=True)), event.at > bindparam("short_since")),
                       and_(event.key.in_(bindparam("long", expanding=True)), event.at > bindparam("long_since"))))
            .group_by(event.key))


def _lock_id(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


FAMILY_WINDOWS = {"att": ATTEMPT_WINDOWS, "fail": FAILURE_WINDOWS, "ins": INSTRUMENT_WINDOWS, "acct": ACCOUNT_WINDOWS}


def _lua_table(values: dict[str, object]) -> str:
    return "{" + ", ".join(f"{name} = {value}" for name, value in values.items()) + "}"


# One round trip, atomic: record the hits, trim and count every window of the key's family, list
# linked members. The windows are written into the script from FAMILY_WINDOWS, so a call carries only
# keys, members and family names. The answer is one JSON string (counts in order, then the member
# lists): decoding it is one C call, where a nested reply costs a Python parser step per value.
_OBSERVE = """
local W = __WINDOWS__
local TTL = __TTLS__
local now = tonumber(ARGV[1])
local nh, nr, nl, limit, linked = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]),
                                  tonumber(ARGV[6])
local a, k = 7, 1
local out = {}
local bounds = {}
local function count(key, family)
  local lows = bounds[family]
  if not lows then
    lows = {}
    for i, w in ipairs(W[family]) do
      lows[i] = '(' .. tostring(now - w)
    end
    bounds[family] = lows
  end
  for i = 1, #lows do
    out[#out + 1] = redis.call('ZCOUNT', key, lows[i], '+inf')
  end
end
for _ = 1, nh do
  local key, member, family = KEYS[k], ARGV[a], ARGV[a + 1]
  k, a = k + 1, a + 2
  redis.call('ZADD', key, now, member)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - TTL[family])
  redis.call('EXPIRE', key, TTL[family])
  count(key, family)
end
for _ = 1, nr do
  -- Most keys only read (failures, instruments) do not exist: every window of a missing key is 0.
  if redis.call('EXISTS', KEYS[k]) == 1 then
    count(KEYS[k], ARGV[a])
  else
    for _ = 1, #W[ARGV[a]] do
      out[#out + 1] = 0
    end
  end
  k, a = k + 1, a + 1
end
for _ = 1, nl do
  out[#out + 1] = redis.call('ZREVRANGEBYSCORE', KEYS[k], '+inf', '(' .. tostring(now - linked), 'LIMIT', 0, limit)
  k = k + 1
end
return cjson.encode(out)
""".replace("__WINDOWS__", _lua_table({f: "{" + ", ".join(map(str, w)) + "}" for f, w in FAMILY_WINDOWS.items()}))
_OBSERVE = _OBSERVE.replace("__TTLS__", _lua_table({f: max(w) for f, w in FAMILY_WINDOWS.items()}))

_RECORD = """
local TTL = __TTLS__
local now = tonumber(ARGV[1])
for i = 1, #KEYS do
  local ttl = TTL[ARGV[2 * i + 1]]
  redis.call('ZADD', KEYS[i], now, ARGV[2 * i])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - ttl)
  redis.call('EXPIRE', KEYS[i], ttl)
end
return #KEYS
""".replace("__TTLS__", _lua_table({f: max(w) for f, w in FAMILY_WINDOWS.items()}))


class RedisCounters:
    """Counters as Redis sorted sets (member → last seen), read and written by one Lua script per call.

    An observation is sent by EVALSHA on a connection of the client's pool, and its answer read
    when the caller asks for it, so the caller's own round trip (the history query) overlaps Redis's.
    """

    name = "redis"

    def __init__(self, client, *, namespace: str = "knowpay:risk") -> None:
        self.client = client
        self.namespace = namespace.rstrip(":") + ":"
        self._observe = client.register_script(_OBSERVE)
        self._record = client.register_script(_RECORD)

    @classmethod
    def from_url(cls, url: str, *, namespace: str = "knowpay:risk", timeout: float = 0.25) -> RedisCounters:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # Short timeouts and no retries: a Redis that hangs must cost a checkout milliseconds, not
        # seconds (the database counters take over), and a script that timed out may have run, so
        # running it again could count an attempt twice.
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout,
                                      health_check_interval=30, retry=Retry(NoBackoff(), 0))
        return cls(client, namespace=namespace)

    def _arguments(self, observation: Observation, now: datetime) -> tuple[list[str], list]:
        keys: list[str] = []
        args: list = [round(_epoch(now), 6), len(observation.hits), len(observation.reads), len(observation.linked),
                      LINKED_LIMIT, observation.linked_window]
        for hit in observation.hits:
            keys.append(self.namespace + hit.key)
            args += [hit.member, _family(hit.key)]
        for read in observation.reads:
            keys.append(self.namespace + read.key)
            args.append(_family(read.key))
        keys += [self.namespace + key for key in observation.linked]
        return keys, args

    def begin(self, observation: Observation, now: datetime) -> Pending:
        keys, args = self._arguments(observation, now)
        pool = self.client.connection_pool
        connection = pool.get_connection()
        try:
            connection.send_command("EVALSHA", self._observe.sha, len(keys), *keys, *args)
        except BaseException:
            pool.release(connection)  # a failed send has disconnected it: the pool reconnects it
            raise

        def answer() -> Counts:
            try:
                # A timeout or a broken connection disconnects it, so no late answer is read by another call.
                reply = connection.read_response()
            except NoScriptError:
                reply = None
            finally:
                pool.release(connection)
            if reply is None:
                # This Redis does not know the script yet (restarted, or flushed): load it and run it.
                reply = self._observe(keys=keys, args=args)
            return self._counts(observation, reply)

        return answer

    def observe(self, observation: Observation, now: datetime) -> Counts:
        return self.begin(observation, now)()

    def _counts(self, observation: Observation, reply: bytes) -> Counts:
        out = json.loads(reply)
        result = Counts(store=self.name)
        position = 0
        items: list[Hit | Read] = [*observation.hits, *observation.reads]
        for item in items:
            windows = FAMILY_WINDOWS[_family(item.key)]
            found = dict(zip(windows, out[position:position + len(windows)], strict=True))
            result.counts[item.key] = {w: int(found.get(w, 0)) for w in item.windows}
            position += len(windows)
        for key in observation.linked:
            # cjson writes an empty list as an empty object.
            result.members[key] = sorted(out[position] or ())
            position += 1
        return result

    def record(self, hits: Sequence[Hit], now: datetime, session: Session | None = None) -> None:
        if not hits:
            return
        args: list = [round(_epoch(now), 6)]
        for hit in hits:
            args += [hit.member, _family(hit.key)]
        self._record(keys=[self.namespace + h.key for h in hits], args=args)


class ResilientCounters:
    """Redis first; when it fails, the database, for a while, and the decision says so."""

    def __init__(self, primary: CounterStore | None, fallback: CounterStore, *, pause_seconds: float = 5.0) -> None:
        self.primary = primary
        self.fallback = fallback
        self.pause_seconds = pause_seconds
        self._skip_until = 0.0

    @property
    def name(self) -> str:
        return self.primary.name if self.primary is not None else self.fallback.name

    def _usable(self) -> bool:
        return self.primary is not None and time.monotonic() >= self._skip_until

    def _failed(self, exc: Exception) -> str:
        self._skip_until = time.monotonic() + self.pause_seconds
        log.warning("risk counters: %s unavailable (%s: %s); using %s counters", self.primary.name,
                    exc.__class__.__name__, exc, self.fallback.name)
        return f"counters: {self.primary.name} unavailable ({exc.__class__.__name__}); used {self.fallback.name}"

    def begin(self, observation: Observation, now: datetime) -> Pending:
        if self._usable():
            try:
                pending = self.primary.begin(observation, now)
            except Exception as exc:  # noqa: BLE001 - whatever Redis does, the checkout goes on
                counts = self._fall_back(observation, now, self._failed(exc))
                return lambda: counts

            def answer() -> Counts:
                try:
                    return pending()
                except Exception as exc:  # noqa: BLE001
                    return self._fall_back(observation, now, self._failed(exc))

            return answer
        fault = None
        if self.primary is not None:
            fault = f"counters: {self.primary.name} paused after a failure; used {self.fallback.name}"
        counts = self._fall_back(observation, now, fault)
        return lambda: counts

    def observe(self, observation: Observation, now: datetime) -> Counts:
        return self.begin(observation, now)()

    def _fall_back(self, observation: Observation, now: datetime, fault: str | None) -> Counts:
        counts = self.fallback.observe(observation, now)
        if fault:
            counts.faults.append(fault)
        return counts

    def record(self, hits: Sequence[Hit], now: datetime, session: Session | None = None) -> None:
        if self._usable():
            try:
                self.primary.record(hits, now)
                return
            except Exception as exc:  # noqa: BLE001
                self._failed(exc)
        self.fallback.record(hits, now, session=session)
