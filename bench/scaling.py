"""Checkout throughput as the web node gets more gunicorn workers: 1, 2, 4 (by default) on one
database, each against the 1-worker figure measured in the same run (the speed-up), and the
embedded SQLite default beside PostgreSQL when asked.

    .venv/bin/python bench/scaling.py [--workers 1 2 4] [--seconds 10] [--buyers 16] [--sqlite]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.checkout import Run  # noqa: E402
from bench.harness import summary  # noqa: E402
from bench.stack import UNLIMITED, Stack, drop_postgres_database, new_postgres_database, shadow_risk_rules  # noqa: E402


def measure(database: str, workers: int, seconds: float, buyers: int) -> tuple[float, Run]:
    folder = Path(tempfile.mkdtemp(prefix=f"knowpay-bench-scale{workers}-"))
    stack = Stack(folder, database, buyers=buyers, web_workers=workers, **UNLIMITED)
    try:
        stack.start(worker=False)
        shadow_risk_rules(requests.Session(), stack.base, stack.data["admin"])
        Run(stack.base, stack.product_id).run(stack.buyers[:2], 2)  # warm up connections and caches
        run = Run(stack.base, stack.product_id)
        return run.run(stack.buyers, seconds), run
    finally:
        stack.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--buyers", type=int, default=16)
    parser.add_argument("--sqlite", action="store_true", help="also run each on the embedded SQLite default")
    args = parser.parse_args()

    backends = ["PostgreSQL", "SQLite"] if args.sqlite else ["PostgreSQL"]
    print(f"{args.buyers} concurrent buyers, {args.seconds:.0f} s per run, gevent web workers")
    for backend in backends:
        baseline = 0.0
        for workers in args.workers:
            if backend == "SQLite":
                database = f"sqlite:///{tempfile.mkdtemp(prefix='knowpay-bench-scale-')}/bench.sqlite3"
            else:
                database = new_postgres_database("knowpay_bench_scale")
            try:
                rate, run = measure(database, workers, args.seconds, args.buyers)
            finally:
                if backend == "PostgreSQL":
                    drop_postgres_database(database)
            baseline = baseline or rate
            print(
                f"\n== {backend}, {workers} web worker(s): {rate:.1f} purchases/s, "
                f"× {rate / baseline:.2f} the first run's; "
                f"{run.purchases} purchases, {len(run.errors)} errors"
            )
            for kind, values in run.latency.items():
                print(f"  {kind:8s} {summary(values)}")
            if run.errors:
                print("  first error:", run.errors[0][:200])


if __name__ == "__main__":
    main()
