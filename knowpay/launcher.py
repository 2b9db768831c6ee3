"""Run several `knowpay` processes as one (the demo): Ctrl-C or any one exiting stops them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def run_together(commands: dict[str, list[str]], *, env: dict[str, str]) -> int:
    """Start `python -m knowpay <args>` for each named command; return the first non-zero exit code."""
    children = {
        name: subprocess.Popen([sys.executable, "-m", "knowpay", *args], env={**os.environ, **env})
        for name, args in commands.items()
    }
    stopping = False

    def stop(*_args: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = 0
    try:
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    print(f"knowpay {name} exited with {child.returncode}; stopping the rest", file=sys.stderr)
                    code = child.returncode or code
                    stopping = True
            time.sleep(0.2)
    finally:
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
    return code
