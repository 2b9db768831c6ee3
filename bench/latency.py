"""Latency under load: p50/p95/p99 of order create, payment create and notification at 50% and 90%
of the maximum purchase rate measured in the same run.

First a closed loop (every buyer buys again as soon as the last purchase finished) finds the maximum;
then an open loop starts purchases on a fixed schedule at 50% and at 90% of it, whether or not earlier
ones finished — as real buyers do — so queueing shows up in the figures. "late" is how far behind
schedule purchases started (large when the client pool cannot keep up: then the figures understate).

    .venv/bin/python bench/latency.py [--seconds 15] [--buyers 16] [--workers 2] [--sqlite]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.checkout import Run  # noqa: E402
from bench.harness import percentile  # noqa: E402
from bench.stack import Stack, web_stack  # noqa: E402

POOL = 128


def open_loop(stack: Stack, rate: float, seconds: float) -> tuple[Run, list[float], float]:
    """Start a purchase every 1/rate s for `seconds` → (the run, how late each started, achieved rate)."""
    run = Run(stack.base, stack.product_id)
    late: list[float] = []
    local = threading.local()
    tokens = stack.buyers

    def one(token: str, due: float) -> None:
        late.append(time.monotonic() - due)
        if not hasattr(local, "http"):
            local.http = requests.Session()
        try:
            run.buy(local.http, token)
        except Exception as exc:  # a bench reports failures, it does not stop on them
            with run.lock:
                run.errors.append(str(exc))

    started = time.monotonic()
    count = int(rate * seconds)
    with ThreadPoolExecutor(POOL) as pool:
        for i in range(count):
            due = started + i / rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            pool.submit(one, tokens[i % len(tokens)], due)
    return run, late, run.purchases / (time.monotonic() - started)


def report(title: str, run: Run, late: list[float] | None, achieved: float) -> None:
    print(
        f"\n== {title}: {achieved:.1f} purchases/s achieved, "
        f"{run.purchases} purchases, {len(run.errors)} errors"
    )
    print(f"   {'request':8s} {'p50':>8s} {'p95':>8s} {'p99':>8s}   (ms)")
    for kind, values in run.latency.items():
        p50, p95, p99 = (percentile(values, p) * 1000 for p in (50, 95, 99))
        print(f"   {kind:8s} {p50:8.1f} {p95:8.1f} {p99:8.1f}")
    if late:
        print(
            f"   started late: p50 {percentile(late, 50) * 1000:.1f} ms, "
            f"p99 {percentile(late, 99) * 1000:.1f} ms"
        )
    if run.errors:
        print("   first error:", run.errors[0][:200])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--buyers", type=int, default=16, help="concurrent buyers of the closed loop")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers of the web node")
    parser.add_argument("--sqlite", action="store_true")
    args = parser.parse_args()

    print(f"database: {'SQLite' if args.sqlite else 'PostgreSQL'}; {args.workers} gevent web workers; "
          f"{args.seconds:.0f} s per run")
    with web_stack("latency", sqlite=args.sqlite, web_workers=args.workers) as stack:
        print(f"instance {stack.folder}")
        Run(stack.base, stack.product_id).run(stack.buyers[:2], 2)  # warm up connections and caches
        closed = Run(stack.base, stack.product_id)
        maximum = closed.run(stack.buyers[: args.buyers], args.seconds)
        report(f"closed loop, {args.buyers} buyers (the maximum)", closed, None, maximum)
        for share in (0.5, 0.9):
            run, late, achieved = open_loop(stack, maximum * share, args.seconds)
            report(f"open loop at {share:.0%} of the maximum ({maximum * share:.1f}/s)", run, late, achieved)


if __name__ == "__main__":
    main()
