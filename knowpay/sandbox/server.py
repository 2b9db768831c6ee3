"""Serve the sandbox gateway under gunicorn: one threaded worker, whose background thread sends
the notifications (one worker, so one sender; the queue in the store survives restarts)."""

from __future__ import annotations

from gunicorn.app.base import BaseApplication

from knowpay.config import ConfigError, Settings


class _SandboxGunicorn(BaseApplication):
    def __init__(self, settings: Settings, options: dict) -> None:
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        # Built in the worker process, after the fork, so the notifier thread runs where requests do.
        from knowpay.sandbox.app import create_sandbox_app

        return create_sandbox_app(self.settings)


def run_sandbox(settings: Settings, host: str = "127.0.0.1", port: int = 8100, *, threads: int = 8,
                access_log: bool = True) -> None:
    """Run the gateway until interrupted (`knowpay sandbox`)."""
    if settings.is_production:
        raise ConfigError("the sandbox gateway runs only outside production")
    options = {
        "bind": f"{host}:{port}",
        "workers": 1,
        "worker_class": "gthread",
        "threads": threads,
        "timeout": 60,
        "graceful_timeout": 10,
        "loglevel": "info",
        "control_socket_disable": True,
        "proc_name": "knowpay-sandbox",
    }
    if access_log:
        options["accesslog"] = "-"
    _SandboxGunicorn(settings, options).run()
