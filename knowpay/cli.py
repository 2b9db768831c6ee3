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
    from knowpay.security import audit

    app = _app()
    rt = app.extensions["knowpay"]
    with app.app_context():
        try:
            with rt.db.transaction() as session:
                user = accounts.register_user(session, email=email, password=password,
                                              username=username or email.split("@")[0], roles=(role,),
                                              clock=rt.clock)
                audit.record(session, "cli", audit.USER_REGISTERED, user.id, {"via": "cli", "roles": [role]},
                             rt.clock)
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
    from knowpay.security import audit

    app = _app()
    rt = app.extensions["knowpay"]
    try:
        with rt.db.transaction() as session:
            issued = accounts.create_api_key(session, name=name, clock=rt.clock)
            audit.record(session, "cli", audit.API_KEY_CREATED, issued.record.id, {"name": issued.record.name},
                         rt.clock)
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


@main.group("recommend")
def recommend_group() -> None:
    """Recommendations from payment data."""


@recommend_group.command("evaluate")
@click.option("--k", default=10, show_default=True, type=click.IntRange(1, 100), help="how many are shown")
@click.option("--test-share", default=0.2, show_default=True, type=click.FloatRange(0.05, 0.95),
              help="the latest share of purchases held out to score against")
def recommend_evaluate(k: int, test_share: float) -> None:
    """Split purchase history by time; print hit rate@k and catalogue coverage beside popularity."""
    from knowpay.recommend.evaluate import evaluate, load_catalogue, load_history

    ctx = _context()
    with ctx.db.transaction(write=False) as session:
        history, catalogue = load_history(session), load_catalogue(session)
    for line in evaluate(history, k=k, test_share=test_share, catalogue=catalogue).lines():
        click.echo(line)


@recommend_group.command("refresh")
@click.option("--full", is_flag=True, help="recount every buyer, not only those whose orders changed")
def recommend_refresh(full: bool) -> None:
    """Bring the co-purchase counts up to date now (the worker does this every half minute)."""
    from knowpay.recommend.service import refresh_recommendations

    click.echo(f"buyers recounted: {refresh_recommendations(_context(), full=full)}")


@main.group("support")
def support_group() -> None:
    """Customer service: the FAQ the assistant answers from."""


@support_group.command("faq")
@click.option("--seed", is_flag=True, help="add the bundled entries (zh-CN and en) that are not there yet")
@click.option("--load", "path", type=click.Path(exists=True, dir_okay=False),
              help="add the entries of a JSON file shaped like knowpay/support/faq_seed.json")
@click.option("--ask", "question", help="show the entries that answer QUESTION, with their confidence")
@click.option("--locale", type=click.Choice(["zh-CN", "en"]), default=None,
              help="with --ask: the FAQ's language (default: guessed from the question)")
def support_faq(seed: bool, path: str | None, question: str | None, locale: str | None) -> None:
    """List the FAQ, add the bundled or a file's entries, or try a question against it."""
    import json
    from pathlib import Path

    from knowpay.domain.errors import KnowPayError
    from knowpay.support import faq
    from knowpay.support.assistant import resolve_locale

    ctx = _context()
    if seed or path:
        entries = faq.seed_entries() if seed else []
        if path:
            try:
                entries += json.loads(Path(path).read_text(encoding="utf-8"))
            except ValueError as exc:
                raise click.ClickException(f"{path} is not JSON: {exc}") from None
        try:
            with ctx.db.transaction() as session:
                click.echo(f"FAQ entries added: {faq.load_entries(session, entries, clock=ctx.clock)}")
        except KnowPayError as exc:
            raise click.ClickException(exc.message) from None
        return
    with ctx.db.transaction(write=False) as session:
        if question:
            matches = faq.search_faq(session, question, resolve_locale(locale, question), limit=5)
            for match in matches:
                mark = "answers" if match.confident else "too weak"
                click.echo(f"{match.confidence:6.2f} {mark:<8} #{match.entry.id} {match.entry.question}")
            if not matches:
                click.echo("no entry matches")
            return
        for entry in faq.list_entries(session, published_only=False):
            state = "" if entry.published else " (unpublished)"
            click.echo(f"#{entry.id} [{entry.locale}] {entry.topic or '-'}: {entry.question}{state}")


@main.group("analytics")
def analytics_group() -> None:
    """Payment analytics: the DuckDB store, reports, Parquet exports and anomaly checks."""


@analytics_group.command("rebuild")
def analytics_rebuild() -> None:
    """Recompute the analytics store from the operational database (the worker then keeps it current)."""
    from knowpay.analytics.store import rebuild, store_for

    ctx = _context()
    with click.progressbar(length=1, label="rebuilding analytics", show_pos=True, file=sys.stderr) as bar:
        def progress(done: int, total: int) -> None:
            bar.length = max(total, 1)
            bar.update(done - bar.pos)

        result = rebuild(ctx, progress=progress)
    click.echo(f"rebuilt {store_for(ctx.settings).path}: {result.rows:,} rows, {result.events:,} events, "
               f"watermark {result.watermark:%Y-%m-%d %H:%M:%S} UTC")


@analytics_group.command("load")
def analytics_load() -> None:
    """Take in what changed since the last load now (the worker does it every minute)."""
    from knowpay.analytics.store import load_increment

    result = load_increment(_context(), blocking=True)
    what = "rebuilt" if result.rebuilt else "loaded"
    click.echo(f"{what}: {result.events:,} events, {result.rows:,} rows, watermark {result.watermark} UTC")


def _day(_ctx, param, value):
    from datetime import date

    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("use YYYY-MM-DD", param=param) from None


@analytics_group.command("report")
@click.option("--from", "start", required=True, callback=_day, help="first day, YYYY-MM-DD (platform time zone)")
@click.option("--to", "end", required=True, callback=_day, help="last day, YYYY-MM-DD, included")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, writable=True),
              help="also write a self-contained HTML report with charts to this file")
@click.option("--creator", "creator_id", default=None, help="only this creator's products")
def analytics_report(start, end, html_path: str | None, creator_id: str | None) -> None:
    """Print a summary of a date range; optionally write an HTML report."""
    from pathlib import Path

    from knowpay.analytics.report import gather, html_report, terminal_summary

    if start > end:
        raise click.BadParameter("--from is after --to", param_hint="--from")
    data = gather(_context(), start=start, end=end, creator_id=creator_id)
    click.echo(terminal_summary(data))
    if html_path:
        Path(html_path).write_text(html_report(data), encoding="utf-8")
        click.echo(f"\nHTML report: {html_path}")


@analytics_group.command("export-parquet")
@click.option("--from", "start", callback=_day, help="export these days again (default: the days that changed)")
@click.option("--to", "end", callback=_day)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="default: <instance>/analytics-parquet")
def analytics_export_parquet(start, end, out_dir: str | None) -> None:
    """Write daily Parquet partitions (table/day=YYYY-MM-DD/part-0.parquet) for Spark, Trino, ClickHouse, DuckDB."""
    from pathlib import Path

    from knowpay.analytics.parquet import PARQUET_DIR, export_parquet

    if (start is None) != (end is None):
        raise click.BadParameter("give both --from and --to, or neither", param_hint="--from")
    ctx = _context()
    written = export_parquet(ctx, out_dir=Path(out_dir) if out_dir else None, start=start, end=end)
    click.echo(f"{len(written)} partitions written under {out_dir or Path(ctx.settings.instance_path) / PARQUET_DIR}")


@analytics_group.command("check")
def analytics_check() -> None:
    """Run the anomaly detectors and relearn the channel ordering now (the worker does it every 5 minutes)."""
    from knowpay.analytics.anomalies import check_anomalies
    from knowpay.analytics.channel_ranking import refresh_channel_model

    ctx = _context()
    cells = refresh_channel_model(ctx)
    found = check_anomalies(ctx)
    click.echo(f"channel model: {cells} cells; new anomalies: {len(found)}")
    for anomaly in found:
        click.echo(f"  {anomaly.kind} {anomaly.subject}: {anomaly.message}")


@main.group("keys")
def keys_group() -> None:
    """Field-encryption keys (KNOWPAY_ENCRYPTION_KEYS, newest first)."""


@keys_group.command("rotate")
@click.option("--batch", default=200, show_default=True, type=click.IntRange(1, 10_000), help="rows per transaction")
def keys_rotate(batch: int) -> None:
    """Re-encrypt two-factor keys and payout bank details under the newest key (then older keys can go)."""
    from knowpay.fieldcrypt import FieldCipher
    from knowpay.security import audit
    from knowpay.security.keys import rotate_field_keys

    ctx = _context()
    newest = ctx.settings.encryption_keys[0][0]
    click.echo(f"re-encrypting under key {newest!r}")

    def progress(result) -> None:  # type: ignore[no-untyped-def]
        click.echo(f"  {result.label}: {result.rotated}/{result.total}", err=True)

    results = rotate_field_keys(ctx.db, FieldCipher(ctx.settings.encryption_keys), newest, progress=progress,
                                batch=batch)
    with ctx.db.transaction() as session:
        audit.record(session, "cli", audit.KEYS_ROTATED, newest,
                     {r.label: {"rotated": r.rotated, "unreadable": len(r.unreadable)} for r in results}, ctx.clock)
    for result in results:
        click.echo(f"{result.label:<30} {result.rotated:>7} re-encrypted")
    unreadable = [(r.label, key) for r in results for key in r.unreadable]
    if unreadable:
        for label, key in unreadable[:20]:
            click.echo(f"UNREADABLE {label} {key}: no configured key decrypts it", err=True)
        sys.exit(1)
    click.echo(f"every encrypted value now uses key {newest!r}")


@main.group("audit")
def audit_group() -> None:
    """The append-only, hash-chained audit log."""


@audit_group.command("verify")
@click.option("--anchor", help="SEQ:HASH of a head printed earlier; fails if that entry is gone or changed")
def audit_verify(anchor: str | None) -> None:
    """Check the hash chain; exits non-zero naming the first edited or deleted entry."""
    from knowpay.security.audit import verify_chain

    parsed = None
    if anchor:
        seq, sep, digest = anchor.partition(":")
        if not sep or not seq.isdigit() or len(digest) != 64:
            raise click.BadParameter("use SEQ:HASH as printed by `knowpay audit verify`", param_hint="--anchor")
        parsed = (int(seq), digest)
    ctx = _context()

    def progress(checked: int) -> None:
        click.echo(f"  checked {checked} entries", err=True)

    with ctx.db.transaction(write=False) as session:
        report = verify_chain(session, anchor=parsed, progress=progress)
    if report.ok:
        click.echo(f"audit log intact: {report.checked} entries; head {report.head_seq}:{report.head_hash}")
        return
    click.echo(f"audit log BROKEN at entry {report.broken_seq}: {report.problem} "
               f"({report.checked} entries before it check out)", err=True)
    sys.exit(1)


def _register_risk() -> None:
    from knowpay.risk.cli import risk

    main.add_command(risk)


_register_risk()
