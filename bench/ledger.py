"""Ledger throughput on PostgreSQL: balanced transactions posted per second, one per database
transaction and batched, with several posting threads, beside pgbench TPC-B TPS from the same run.

    .venv/bin/python bench/ledger.py [--seconds 10] [--threads 4] [--batch 50]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import fresh_database, pgbench_tps  # noqa: E402
from knowpay.db import Database  # noqa: E402
from knowpay.ledger import chart  # noqa: E402
from knowpay.ledger.service import Leg, post_transaction, verify_ledger  # noqa: E402
from knowpay.migrate import upgrade  # noqa: E402

CREATORS = 50


def sale(n: int) -> tuple[list[Leg], list]:
    """A 99.00 capture for one of 50 creators: clearing, creator pending, platform fee, channel fee."""
    creator = f"usr_bench{n % CREATORS:04d}"
    specs = [chart.clearing("alipay", "cny"), chart.creator_pending(creator, "cny"), chart.platform_fees("cny"),
             chart.channel_fees("alipay", "cny")]
    legs = [Leg(specs[0].code, 9900 - 59, "cny"), Leg(specs[1].code, -8910, "cny"), Leg(specs[2].code, -990, "cny"),
            Leg(specs[3].code, 59, "cny")]
    return legs, specs


def run(db: Database, *, seconds: float, threads: int, batch: int) -> float:
    counter = itertools.count()
    done = [0] * threads
    deadline = time.monotonic() + seconds

    def poster(i: int) -> None:
        while time.monotonic() < deadline:
            with db.transaction() as session:
                for _ in range(batch):
                    n = next(counter)
                    legs, specs = sale(n)
                    post_transaction(session, key=f"bench:{n}", kind="capture", legs=legs, accounts=specs)
            done[i] += batch

    started = time.monotonic()
    workers = [threading.Thread(target=poster, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(done) / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()
    url = fresh_database("knowpay_bench_ledger")
    upgrade(url)
    db = Database(url, pool_size=args.threads + 2)
    one = run(db, seconds=args.seconds, threads=args.threads, batch=1)
    batched = run(db, seconds=args.seconds, threads=args.threads, batch=args.batch)
    with db.transaction(write=False) as session:
        report = verify_ledger(session)
    tps = pgbench_tps()
    print(f"ledger on PostgreSQL, {args.threads} posting threads, 4-leg capture transactions")
    print(f"  one per database transaction : {one:9.1f} transactions/s   ({one / tps:.3f} × pgbench TPS)")
    print(f"  batched {args.batch:3d} per transaction : {batched:9.1f} transactions/s   ({batched / tps:.3f} × pgbench TPS)")
    print(f"  pgbench TPC-B (scale 10, 8 clients): {tps:9.1f} TPS")
    print(f"  verify_ledger afterwards: {'clean' if report.ok else report}; "
          f"{report.transactions_checked} transactions, {report.accounts_checked} accounts")


if __name__ == "__main__":
    main()
