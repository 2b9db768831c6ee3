"""Notification throughput of `knowpay serve`: signed sandbox notifications processed per second.

1. distinct: one notification for each of many open payments (each one a capture);
2. hammered: the same notification for one payment, again and again (each one a no-op repeat);
3. flood: P payments × R notifications each, shuffled (R distinct notify ids per payment) — every
   payment must end captured exactly once, and the bench says so.
Beside them, in the same run on the same server, pgbench TPC-B TPS and each rate ÷ TPS.

    .venv/bin/python bench/notifications.py [--payments 1500] [--seconds 15] [--connections 20]
        [--flood-payments 1000 --flood-repeats 20] [--workers 2] [--sqlite]
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from pathlib import Path

import psycopg
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.checkout import signed_notification  # noqa: E402
from bench.harness import pgbench_tps, summary  # noqa: E402
from bench.stack import Stack, start_payment, web_stack  # noqa: E402


def open_payments(stack: Stack, count: int, threads: int = 16) -> list[dict]:
    """Up to `count` payments waiting for their notification, made over the API by the seeded buyers
    (a refused one is reported and left out)."""
    made: list[dict] = []
    refused: list[str] = []
    lock = threading.Lock()

    def maker(token: str, share: int) -> None:
        http = requests.Session()
        for _ in range(share):
            try:
                payment = start_payment(http, stack.base, token, stack.product_id)
            except RuntimeError as exc:
                with lock:
                    refused.append(str(exc))
                continue
            with lock:
                made.append(payment)

    workers = [
        threading.Thread(
            target=maker,
            args=(stack.buyers[i % len(stack.buyers)], count // threads + (1 if i < count % threads else 0)),
        )
        for i in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if refused:
        print(f"  {len(refused)} of {count} payments could not be opened; first: {refused[0][:200]}")
    return made


def send(
    base: str, notifications: list[tuple[bytes, dict]], connections: int, *, seconds: float | None = None
) -> tuple[float, list[float], int]:
    """POST the notifications over `connections` keep-alive connections (cycling through them for
    `seconds` when given) → (per second, latencies, answers other than "success")."""
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    deadline = time.monotonic() + seconds if seconds else None

    def connection(share: list[tuple[bytes, dict]]) -> None:
        nonlocal failures
        http = requests.Session()
        mine, bad, i = [], 0, 0
        while share and (i < len(share) if deadline is None else time.monotonic() < deadline):
            body, headers = share[i % len(share)]
            started = time.perf_counter()
            answer = http.post(f"{base}/notify/sandbox", data=body, headers=headers, timeout=60)
            mine.append(time.perf_counter() - started)
            bad += answer.text != "success"
            i += 1
        with lock:
            latencies.extend(mine)
            failures += bad

    started = time.monotonic()
    threads = [
        threading.Thread(target=connection, args=(notifications[i::connections],)) for i in range(connections)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(latencies) / (time.monotonic() - started), latencies, failures


def captured_once(stack: Stack, payment_ids: list[str]) -> bool:
    url = stack.env["KNOWPAY_DATABASE_URL"]
    keys = [f"payment:{pid}:captured" for pid in payment_ids]
    if url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(url.split("///", 1)[1]) as conn:
            marks = ",".join("?" * len(keys))
            count = conn.execute(
                f"SELECT count(*) FROM journal_transactions WHERE idempotency_key IN ({marks})",  # noqa: S608
                keys,
            ).fetchone()[0]
    else:
        with psycopg.connect(url) as conn:
            count = conn.execute(
                "SELECT count(*) FROM journal_transactions WHERE idempotency_key = ANY(%s)", (keys,)
            ).fetchone()[0]
    return count == len(payment_ids)


def line(title: str, rate: float, latencies: list[float], failures: int, tps: float) -> None:
    ratio = f"   ratio ÷ TPS {rate / tps:.3f}" if tps else ""
    print(f"{title:34s} {rate:8.1f}/s   {summary(latencies)}   not acknowledged: {failures}{ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payments", type=int, default=1500, help="distinct payments notified once each")
    parser.add_argument("--seconds", type=float, default=15, help="length of the hammered run")
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--flood-payments", type=int, default=200)
    parser.add_argument("--flood-repeats", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers of the web node")
    parser.add_argument("--sqlite", action="store_true")
    parser.add_argument("--no-pgbench", action="store_true")
    args = parser.parse_args()

    print(f"database: {'SQLite' if args.sqlite else 'PostgreSQL'}; {args.workers} gevent web workers; "
          f"{args.connections} connections")
    with web_stack("notify", sqlite=args.sqlite, web_workers=args.workers) as stack:
        print(f"instance {stack.folder}")
        distinct = open_payments(stack, args.payments)
        send(stack.base, [signed_notification(p) for p in open_payments(stack, 20)], 4)  # warm up
        rate, lat, bad = send(stack.base, [signed_notification(p) for p in distinct], args.connections)
        ok = captured_once(stack, [p["id"] for p in distinct])
        hammered = open_payments(stack, 1)[0]
        one = signed_notification(hammered)
        h_rate, h_lat, h_bad = send(
            stack.base, [one] * args.connections, args.connections, seconds=args.seconds
        )
        h_ok = captured_once(stack, [hammered["id"]])
        flooded = open_payments(stack, args.flood_payments)
        flood = [signed_notification(p) for p in flooded for _ in range(args.flood_repeats)]
        random.Random(11).shuffle(flood)
        f_rate, f_lat, f_bad = send(stack.base, flood, args.connections)
        f_ok = captured_once(stack, [p["id"] for p in flooded])
        tps = 0.0 if (args.no_pgbench or args.sqlite) else pgbench_tps()
        print()
        line(f"distinct payments ({len(distinct)})", rate, lat, bad, tps)
        line("one payment, same notification", h_rate, h_lat, h_bad, tps)
        line(f"flood {args.flood_payments} × {args.flood_repeats} shuffled", f_rate, f_lat, f_bad, tps)
        if tps:
            print(f"pgbench TPC-B TPS (scale 10, 8 clients)  {tps:.1f}")
        print(f"each payment captured exactly once: distinct {ok}, hammered {h_ok}, flood {f_ok}")
        verified = stack.verify()
        print(verified.stdout.strip().splitlines()[-1] if verified.returncode == 0 else verified.stderr)


if __name__ == "__main__":
    main()
