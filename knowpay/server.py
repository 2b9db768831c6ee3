"""Run the WSGI app under gunicorn (never Flask's development server)."""

from __future__ import annotations

from gunicorn.app.base import BaseApplication

from knowpay.config import Settings


class _Gunicorn(BaseApplication):
    def __init__(self, settings: Settings, options: dict) -> None:
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        from knowpay.web import create_app

        return create_app(self.settings)


def run_gunicorn(settings: Settings, *, host: str, port: int, workers: int, threads: int) -> None:
    _Gunicorn(settings, {
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "timeout": 60,
        "graceful_timeout": 10,
        "accesslog": "-",
        "loglevel": "info",
    }).run()
