"""Run the WSGI app under gunicorn (never Flask's development server).

The default worker is gevent: an open payment event stream then costs a greenlet, not a thread,
so hundreds of buyers watching their QR codes do not starve the API. psycopg 3 cooperates with
gevent's patched `select`; SQLite calls are short and simply block their greenlet.
"""

from __future__ import annotations

from gunicorn.app.base import BaseApplication

from knowpay.config import Settings

WORKER_CLASSES = ("gevent", "gthread")


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


def run_gunicorn(settings: Settings, *, host: str, port: int, workers: int, threads: int = 8,
                 worker_class: str = "gevent", access_log: bool = True) -> None:
    options = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": worker_class,
        "timeout": 60,
        "graceful_timeout": 10,
        "loglevel": "info",
        "control_socket_disable": True,
    }
    if worker_class == "gevent":
        options["worker_connections"] = 2000
    else:
        options["threads"] = threads
    if access_log:
        options["accesslog"] = "-"
    _Gunicorn(settings, options).run()
