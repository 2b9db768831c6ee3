"""Shared bench plumbing: a fresh PostgreSQL database, KnowPay processes, pgbench, latency figures."""

from __future__ import annotations

import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import psycopg
import requests

PG_ADMIN = os.environ.get("KNOWPAY_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def pg_url(name: str) -> str:
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


def fresh_database(name: str) -> str:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return pg_url(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


@contextmanager
def knowpay_process(args: list[str], env: dict[str, str], *, ready_url: str | None = None, log: Path | None = None):
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "knowpay", *args], env={**os.environ, **env},
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if ready_url:
            wait_http(ready_url)
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        if log:
            out.close()


def pgbench_tps(*, scale: int = 10, clients: int = 8, seconds: int = 20) -> float:
    """TPC-B TPS of this machine's PostgreSQL, measured now, for a ratio that travels between machines."""
    url = fresh_database("knowpay_pgbench")
    subprocess.run(["pgbench", "-i", "-q", "-s", str(scale), url], check=True, capture_output=True)
    done = subprocess.run(["pgbench", "-c", str(clients), "-j", "2", "-T", str(seconds), "-n", url],
                          check=True, capture_output=True, text=True)
    match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", done.stdout)
    if not match:
        raise RuntimeError("could not read pgbench output:\n" + done.stdout)
    return float(match.group(1))


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> str:
    return (f"n={len(values):5d}  p50={percentile(values, 50) * 1000:7.1f} ms  "
            f"p99={percentile(values, 99) * 1000:7.1f} ms  mean={statistics.fmean(values) * 1000:7.1f} ms")
