"""The `knowpay` command (API.md): init, serve, users, apikeys, demo."""

from __future__ import annotations

import sys

import click

from knowpay.config import ConfigError, load_settings


def _settings():
    try:
        return load_settings()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _app():
    from knowpay.web import create_app

    return create_app(_settings())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """KnowPay: payments for knowledge-paid platforms."""


@main.command()
def init() -> None:
    """Create or migrate the database."""
    from knowpay.bootstrap import init_database

    settings = init_database(_settings())
    click.echo(f"database ready: {_redact(settings.database_url)}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64),
              help="gunicorn worker processes")
@click.option("--worker-class", default="gevent", show_default=True, type=click.Choice(["gevent", "gthread"]),
              help="gevent keeps open event streams cheap; gthread uses a thread per request")
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 256),
              help="threads per worker (gthread only)")
@click.option("--no-access-log", is_flag=True, help="do not log every request")
def serve(host: str, port: int, workers: int, worker_class: str, threads: int, no_access_log: bool) -> None:
    """Serve the web pages and the API with gunicorn."""
    from knowpay.server import run_gunicorn

    settings = _settings()
    click.echo(f"KnowPay on http://{host}:{port} ({workers} {worker_class} workers)")
    run_gunicorn(settings, host=host, port=port, workers=workers, threads=threads, worker_class=worker_class,
                 access_log=not no_access_log)


@main.command()
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64), help="consumer threads")
def worker(workers: int) -> None:
    """Run background jobs and schedules (expiry, channel queries, refunds, webhooks)."""
    from knowpay.jobs.worker import run_worker

    run_worker(_settings(), workers=workers)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8100, show_default=True, type=int)
def sandbox(host: str, port: int) -> None:
    """Run the local payment gateway that stands in for the real channels."""
    from knowpay.sandbox.server import run_sandbox

    settings = _settings()
    if settings.is_production:
        raise click.ClickException("the sandbox gateway does not run in production")
    click.echo(f"sandbox gateway on http://{host}:{port}")
    run_sandbox(settings, host=host, port=port)


@main.group()
def users() -> None:
    """Manage users."""


@users.command("create")
@click.option("--email", required=True)
@click.option("--password", required=True)
@click.option("--username", default=None, help="defaults to the part of the e-mail before @")
@click.option("--role", "role", default="buyer", show_default=True,
              type=click.Choice(["buyer", "creator", "support", "admin"]))
def users_create(email: str, password: str, username: str | None, role: str) -> None:
    """Create a user with one role."""
    from knowpay.accounts import service as accounts
    from knowpay.domain.errors import KnowPayError

    app = _app()
    rt = app.extensions["knowpay"]
    with app.app_context():
        try:
            with rt.db.transaction() as session:
                user = accounts.register_user(session, email=email, password=password,
                                              username=username or email.split("@")[0], roles=(role,),
                                              clock=rt.clock)
                click.echo(f"created {user.id} {user.email} ({role})")
        except KnowPayError as exc:
            raise click.ClickException(exc.message) from None


@main.group()
def apikeys() -> None:
    """Manage platform API keys."""


@apikeys.command("create")
@click.option("--name", required=True, help="which service will use the key")
def apikeys_create(name: str) -> None:
    """Create a key; it is printed once and stored only as a hash."""
    from knowpay.accounts import service as accounts
    from knowpay.domain.errors import KnowPayError

    app = _app()
    rt = app.extensions["knowpay"]
    try:
        with rt.db.transaction() as session:
            issued = accounts.create_api_key(session, name=name, clock=rt.clock)
    except KnowPayError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(issued.key)
    click.echo(f"# {issued.record.id} '{issued.record.name}': store it now, it cannot be shown again", err=True)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--sandbox-port", default=8100, show_default=True, type=int)
def demo(host: str, port: int, sandbox_port: int) -> None:
    """Seed demo data, then run web, worker and the sandbox gateway together (Ctrl-C stops all)."""
    import os

    from knowpay.bootstrap import init_database
    from knowpay.demo import seed_demo
    from knowpay.launcher import run_together
    from knowpay.sandbox.gateways import gateway_plugins
    from knowpay.web import create_app

    env = {
        "KNOWPAY_BASE_URL": os.environ.get("KNOWPAY_BASE_URL", f"http://{host}:{port}"),
        "KNOWPAY_SANDBOX_URL": os.environ.get("KNOWPAY_SANDBOX_URL", f"http://{host}:{sandbox_port}"),
    }
    os.environ.update(env)
    # Keys and URLs for the sandbox's Alipay, WeChat Pay and Stripe imitations; real settings win.
    for plugin in gateway_plugins().values():
        if hasattr(plugin, "demo_env"):
            found = plugin.demo_env(_settings().instance_path)
            env.update({k: v for k, v in found.items() if k not in os.environ})
    os.environ.update(env)
    settings = init_database(_settings())
    app = create_app(settings)
    rt = app.extensions["knowpay"]
    with app.app_context(), rt.db.transaction() as session:
        lines = seed_demo(session, clock=rt.clock)
    rt.db.dispose()
    click.echo("Demo accounts (e-mail, password):")
    for line in lines:
        click.echo(line)
    click.echo(f"\nKnowPay demo on http://{host}:{port}  (catalog: http://{host}:{port}/api/v1/products)")
    click.echo(f"Sandbox gateway on http://{host}:{sandbox_port}. Press Ctrl-C to stop.")
    sys.stdout.flush()
    code = run_together({
        "serve": ["serve", "--host", host, "--port", str(port), "--workers", "1"],
        "worker": ["worker", "--workers", "2"],
        "sandbox": ["sandbox", "--host", host, "--port", str(sandbox_port)],
    }, env=env)
    sys.exit(code)


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def _context():
    from knowpay.context import build_context

    return build_context(_settings())


@main.command()
@click.option("--channel", required=True, help="alipay, wechat, sandbox, ...")
@click.option("--date", "day", required=True, type=click.DateTime(formats=["%Y-%m-%d"]),
              help="the day, in the platform time zone")
@click.option("--file", "path", type=click.Path(exists=True, dir_okay=False),
              help="read this bill file instead of fetching it from the channel")
def reconcile(channel: str, day, path: str | None) -> None:
    """Match a channel's daily bill against our payments and refunds."""
    from pathlib import Path

    from knowpay.domain.errors import KnowPayError
    from knowpay.reconciliation.service import reconcile as run_reconcile

    ctx = _context()
    shown = {"step": -1}

    def progress(n: int, total: int) -> None:
        step = n * 10 // max(total, 1)
        if step != shown["step"]:
            shown["step"] = step
            click.echo(f"\r  matching bill lines: {n}/{total}", nl=n == total, err=True)

    data = Path(path).read_bytes() if path else None
    click.echo(f"reconciling {channel} for {day:%Y-%m-%d} from {path or 'the channel'} …", err=True)
    try:
        run = run_reconcile(ctx, channel=channel, day=day.date(), data=data, source=path or "channel",
                            progress=progress)
    except KnowPayError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"run {run.id} ({run.status}, run #{run.runs} for this day)")
    for result in ("matched", "missing_internal", "missing_channel", "amount_mismatch", "status_mismatch"):
        click.echo(f"  {result:<17} {run.counts.get(result, 0):>6}")
    problems = sum(v for k, v in run.counts.items() if k != "matched")
    click.echo("all lines match" if not problems else f"{problems} discrepancies: see the run in the admin console")


@main.command()
def verify() -> None:
    """Check the money invariants; exits non-zero when any is violated."""
    from knowpay.invariants import check_invariants

    report = check_invariants(_context())
    for name, count in report.checked.items():
        click.echo(f"checked {count:>7} {name}")
    if report.ok:
        click.echo("all invariants hold")
        return
    for violation in report.violations:
        click.echo(f"VIOLATED {violation.check}: {violation.detail}: {', '.join(violation.ids[:20])}", err=True)
    sys.exit(1)
