"""Risk decisions in process: decisions per second and p50/p99 latency of one assessment, with Redis
counters and with database counters, the model on and off.

An assessment is what checkout waits for before a channel is called: velocity counters recorded and
read (one Lua call to Redis, sent before and answered after the history query; or one transaction
in the database), the buyer's history read (one query), the model scored, every rule run. Storing
the decision rides in the payment's own transaction and is shown separately. The history behind it
is simulated (`knowpay risk simulate`) and the model is trained on it.

The machine's own round trips are measured in the same rounds as the decisions (a bare Redis PING,
a bare PostgreSQL `SELECT 1`, and both at once as an assessment overlaps them): the floor under any
figure above it, under the same load.

    .venv/bin/python bench/risk.py [--decisions 3000] [--buyers 300] [--sqlite]
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import fresh_database, percentile

REDIS_URL = "redis://127.0.0.1:6379/0"


def prepare(url: str, instance: str, buyers: int):
    from sqlalchemy import select

    from knowpay.accounts.models import User
    from knowpay.config import load_settings
    from knowpay.context import build_context
    from knowpay.migrate import upgrade
    from knowpay.risk.model import train
    from knowpay.risk.simulate import simulate

    upgrade(url)
    ctx = build_context(load_settings({"KNOWPAY_DATABASE_URL": url, "KNOWPAY_INSTANCE_PATH": instance}))
    started = time.perf_counter()
    summary = simulate(ctx, buyers=buyers, days=30, seed=11)
    trained = train(ctx, seed=1, activate=True)
    print(f"history: {sum(summary.payments.values())} payments of {sum(summary.users.values())} accounts; "
          f"model v{trained.version} ROC AUC {trained.metrics['roc_auc']} "
          f"({time.perf_counter() - started:.1f} s to simulate and train)")
    if not ctx.db.is_sqlite:
        # Planner statistics, as a database that has been running has them.
        with ctx.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")
    with ctx.db.transaction(write=False) as session:
        users = session.execute(select(User.id, User.email, User.created_at)).all()
    return ctx, users


def subjects(users, n: int, seed: int = 5):
    from knowpay.risk.subject import Subject

    rng = random.Random(seed)
    made = []
    for _ in range(n):
        user_id, email, created = rng.choice(users)
        made.append(Subject(kind="payment", user_id=user_id, email=email, account_created_at=created,
                            amount=rng.choice((990, 2990, 9900, 19900, 29900)), currency="cny",
                            channel=rng.choice(("alipay", "wechat", "stripe")), method=None,
                            ip=f"{rng.choice((36, 58, 111, 183))}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.7",
                            device_id=f"dev-{rng.randint(0, 500)}", can_challenge=False))
    return made


CONFIGS = (("redis", True), ("redis", False), ("database", True), ("database", False))
ROUNDS = 10
AIM_P99 = 0.001


class Floors:
    """Bare round trips to this Redis and this PostgreSQL, no client library in the way."""

    def __init__(self, database_url: str | None) -> None:
        import psycopg

        self.redis = socket.create_connection(("127.0.0.1", 6379))
        self.redis.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pg = psycopg.connect(database_url, autocommit=True) if database_url else None
        self.found: dict[str, list[float]] = {"Redis PING": []}
        if self.pg is not None:
            self.found.update({"PostgreSQL SELECT 1": [], "both at once": []})

    def _ping(self) -> None:
        self.redis.sendall(b"PING\r\n")
        if self.redis.recv(64) != b"+PONG\r\n":
            raise RuntimeError("unexpected answer to PING")

    def sample(self, n: int) -> None:
        for _ in range(n):
            t0 = time.perf_counter()
            self._ping()
            self.found["Redis PING"].append(time.perf_counter() - t0)
            if self.pg is None:
                continue
            t0 = time.perf_counter()
            self.pg.execute("SELECT 1").fetchone()
            self.found["PostgreSQL SELECT 1"].append(time.perf_counter() - t0)
            # As an assessment does it: the Redis request out, the query run, then Redis's answer read.
            t0 = time.perf_counter()
            self.redis.sendall(b"PING\r\n")
            self.pg.execute("SELECT 1").fetchone()
            if self.redis.recv(64) != b"+PONG\r\n":
                raise RuntimeError("unexpected answer to PING")
            self.found["both at once"].append(time.perf_counter() - t0)

    def close(self) -> None:
        self.redis.close()
        if self.pg is not None:
            self.pg.close()


def engines(ctx, users) -> dict:
    """One engine per configuration, warmed up (connections open, model loaded)."""
    from knowpay.domain.clock import SystemClock
    from knowpay.risk.engine import build_engine

    built = {}
    now = SystemClock().now()
    for counters, model in CONFIGS:
        settings = ctx.settings.with_overrides(redis_url=REDIS_URL if counters == "redis" else None)
        engine = build_engine(settings, ctx.db, redis_namespace=f"knowpay-bench:{uuid.uuid4().hex}", use_model=model)
        for i, subject in enumerate(subjects(users, 200, seed=1)):
            engine.assess(subject, now=now + timedelta(milliseconds=i))
        built[(counters, model)] = engine
    return built


def measure(ctx, users, built: dict, decisions: int, floors: Floors) -> dict:
    """Latencies per configuration, taken in interleaved rounds so that a change in the machine's load
    falls on every configuration (and on the floors) alike."""
    from knowpay.domain.clock import SystemClock
    from knowpay.risk.service import store_decision

    work = subjects(users, decisions)
    per_round = max(decisions // ROUNDS, 1)
    found: dict = {key: [] for key in (*built, "stored")}
    now = SystemClock().now() + timedelta(seconds=5)
    for r in range(ROUNDS):
        chunk = work[r * per_round:(r + 1) * per_round]
        for key, engine in built.items():
            for i, subject in enumerate(chunk):
                at = now + timedelta(seconds=r, microseconds=i)
                t0 = time.perf_counter()
                assessment = engine.assess(subject, now=at)
                found[key].append(time.perf_counter() - t0)
                counters, model = key
                if (model and assessment.score is None) or assessment.counters != counters:
                    raise RuntimeError(f"{key}: {assessment.counters}, score {assessment.score}: "
                                       f"{assessment.faults}")
        engine = built[("redis", True)]
        for i, subject in enumerate(chunk):
            t0 = time.perf_counter()
            assessment = engine.assess(subject, now=now + timedelta(seconds=r, microseconds=500_000 + i))
            with ctx.db.transaction() as session:
                store_decision(session, ctx, assessment)
            found["stored"].append(time.perf_counter() - t0)
        floors.sample(len(chunk))
    return found


def components(ctx, users, built: dict, n: int = 2000) -> dict:
    """What one assessment is made of, each timed alone."""
    from knowpay.domain.clock import SystemClock
    from knowpay.risk.features import observation, vector

    work = subjects(users, n, seed=9)
    now = SystemClock().now() + timedelta(minutes=1)
    redis_engine, db_engine = built[("redis", True)], built[("database", True)]
    row = vector(redis_engine.assess(work[0], now=now).signals)
    timed: dict[str, list[float]] = {"redis counters (1 Lua call)": [], "database counters (1 transaction)": [],
                                     "history read (1 query)": [], "model score": [], "whole, in memory": []}
    parts = (
        ("redis counters (1 Lua call)",
         lambda subject, at: redis_engine.counters.primary.observe(observation(subject, uuid.uuid4().hex), at)),
        ("database counters (1 transaction)",
         lambda subject, at: db_engine.counters.observe(observation(subject, uuid.uuid4().hex), at)),
        ("history read (1 query)", lambda subject, at: redis_engine.profiles.history(subject, at)),
        ("model score", lambda subject, at: redis_engine.models.score(row)))
    for i, subject in enumerate(work):
        at = now + timedelta(microseconds=i)
        for name, call in parts:
            t0 = time.perf_counter()
            call(subject, at)
            timed[name].append(time.perf_counter() - t0)
    from knowpay.risk.counters import MemoryCounters
    from knowpay.risk.engine import RiskEngine
    from knowpay.risk.profiles import MemoryProfiles

    memory = RiskEngine(settings=ctx.settings, counters=MemoryCounters(), profiles=MemoryProfiles(),
                        config=redis_engine.config, models=redis_engine.models)
    for i, subject in enumerate(work):
        t0 = time.perf_counter()
        memory.assess(subject, now=now + timedelta(microseconds=i))
        timed["whole, in memory"].append(time.perf_counter() - t0)
    return timed


def _forget(engine) -> None:
    client, namespace = engine.counters.primary.client, engine.counters.primary.namespace
    for key in client.scan_iter(f"{namespace}*", count=1000):
        client.delete(key)


def _script_stats(built: dict) -> tuple[int, int]:
    """EVALSHA calls and microseconds so far, as the Redis server counts them (all its clients)."""
    found = built[("redis", True)].counters.primary.client.info("commandstats").get("cmdstat_evalsha", {})
    return int(found.get("calls", 0)), int(found.get("usec", 0))


def _row(label: str, latencies: list[float]) -> str:
    rate = len(latencies) / sum(latencies)
    return (f"{label:<28} {rate:>12.0f} {percentile(latencies, 50) * 1000:>8.3f} "
            f"{percentile(latencies, 99) * 1000:>8.3f} {statistics.fmean(latencies) * 1000:>8.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--decisions", type=int, default=3000)
    parser.add_argument("--buyers", type=int, default=300)
    parser.add_argument("--sqlite", action="store_true", help="the embedded SQLite database instead of PostgreSQL")
    args = parser.parse_args()
    instance = tempfile.mkdtemp(prefix="knowpay-bench-risk-")
    url = f"sqlite:///{instance}/knowpay.sqlite3" if args.sqlite else fresh_database("knowpay_bench_risk")
    print(f"database: {'SQLite' if args.sqlite else 'PostgreSQL'}; {args.decisions} decisions per configuration "
          f"in {ROUNDS} interleaved rounds, one thread, in process; load average {os.getloadavg()[0]:.1f}")
    ctx, users = prepare(url, instance, args.buyers)
    built = engines(ctx, users)
    floors = Floors(None if args.sqlite else url)
    found = measure(ctx, users, built, args.decisions, floors)
    floors.close()
    print(f"{'counters, model':<28} {'decisions/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for counters, model in CONFIGS:
        print(_row(f"{counters}, model {'on' if model else 'off'}", found[(counters, model)]))
    print(_row("redis, model on, + stored", found["stored"]))
    print(f"{'floor (same rounds)':<28} {'trips/s':>12}")
    for name, latencies in floors.found.items():
        print(_row(f"  {name}", latencies))
    aim = percentile(found[("redis", True)], 99)
    print(
        f"aim: p99 under {AIM_P99 * 1000:.0f} ms with Redis counters and the model: "
        f"{'met' if aim < AIM_P99 else 'not met'} ({aim * 1000:.3f} ms)"
    )
    print("one assessment, part by part:")
    before = _script_stats(built)
    parts = components(ctx, users, built)
    calls, usec = (after - first for after, first in zip(_script_stats(built), before, strict=True))
    for name, latencies in parts.items():
        print(
            f"  {name:<34} p50 {percentile(latencies, 50) * 1000:7.3f} ms   "
            f"p99 {percentile(latencies, 99) * 1000:7.3f} ms"
        )
    ours = len(parts["redis counters (1 Lua call)"])
    print(
        f"  Redis's own time running the script: {usec / max(calls, 1):.0f} µs a call "
        f"(INFO commandstats over {calls} EVALSHA calls, {ours} of them ours)"
    )
    print(f"load average now {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")
    for engine in built.values():
        if engine.counters.primary is not None:
            _forget(engine)
    ctx.db.dispose()


if __name__ == "__main__":
    main()
