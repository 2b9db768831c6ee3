"""`knowpay risk ...`: simulate history, train the model, back-test a rule, the daily report, rules, models."""

from __future__ import annotations

import json

import click


def _context():  # type: ignore[no-untyped-def]
    from knowpay.cli import _settings
    from knowpay.context import build_context

    return build_context(_settings())


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(getattr(exc, "message", str(exc)))


@click.group()
def risk() -> None:
    """Payment risk: rules, model, back-tests, reports."""


@risk.command()
@click.option("--buyers", default=1000, show_default=True, type=click.IntRange(10, 1_000_000))
@click.option("--days", default=60, show_default=True, type=click.IntRange(1, 3650))
@click.option("--seed", default=7, show_default=True, type=int)
def simulate(buyers: int, days: int, seed: int) -> None:
    """Write a realistic labelled history: normal buyers, card testers, refund abusers, account farms."""
    from knowpay.risk.simulate import simulate as run

    summary = run(_context(), buyers=buyers, days=days, seed=seed)
    click.echo(f"history {summary.start:%Y-%m-%d} .. {summary.end:%Y-%m-%d} (seed {seed})")
    for actor in ("buyer", "tester", "abuser", "farm"):
        click.echo(f"  accounts  {actor:<7} {summary.users[actor]:>7}")
    for actor in ("normal", "tester", "abuser", "farm"):
        click.echo(f"  payments  {actor:<7} {summary.payments[actor]:>7}")
    click.echo(f"  succeeded {summary.succeeded}, failed {summary.failed}, refunded {summary.refunds}, "
               f"labelled fraud {summary.fraud_labels}")


@risk.command()
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--test-fraction", default=0.25, show_default=True, type=click.FloatRange(0.05, 0.9),
              help="the latest share of history held out for the figures")
@click.option("--activate", is_flag=True, help="act on the new version now (else it runs in shadow)")
def train(seed: int, test_fraction: float, activate: bool) -> None:
    """Train a new model version on labelled history; prints its held-out precision, recall and ROC AUC."""
    from knowpay.domain.errors import KnowPayError
    from knowpay.risk.model import train as run

    try:
        trained = run(_context(), seed=seed, test_fraction=test_fraction, activate=activate)
    except KnowPayError as exc:
        raise _fail(exc) from None
    m = trained.metrics
    click.echo(f"model v{trained.version} ({trained.status}), seed {seed}")
    click.echo(f"  trained on {m['n_train']} payments ({m['fraud_train']} fraud) from {m['train_from'][:10]}")
    click.echo(f"  held out   {m['n_test']} payments ({m['fraud_test']} fraud) from {m['test_from'][:10]} "
               f"to {m['test_to'][:10]}")
    click.echo(f"  precision {m['precision']:.4f}  recall {m['recall']:.4f}  ROC AUC {m['roc_auc']:.4f}  "
               f"(threshold {m['threshold']})")


@risk.command()
@click.option("--rule", "rule_name", required=True)
@click.option("--since", required=True, type=click.DateTime(formats=["%Y-%m-%d"]))
@click.option("--until", default=None, type=click.DateTime(formats=["%Y-%m-%d"]))
@click.option("--params", default=None, help='JSON merged over the rule\'s parameters, e.g. \'{"threshold": 0.6}\'')
@click.option("--action", default=None, type=click.Choice(["challenge", "review", "block"]))
def backtest(rule_name: str, since, until, params: str | None, action: str | None) -> None:  # type: ignore[no-untyped-def]
    """Replay history since a day: payments and money the rule would have stopped, and how many were known bad."""
    from knowpay.domain.errors import KnowPayError
    from knowpay.risk.backtest import backtest as run

    try:
        result = run(_context(), rule_name, since=since, until=until,
                     params=json.loads(params) if params else None, action=action)
    except json.JSONDecodeError:
        raise click.BadParameter("must be a JSON object", param_hint="--params") from None
    except KnowPayError as exc:
        raise _fail(exc) from None
    for line in result.lines():
        click.echo(line)


@risk.command()
@click.option("--date", "day", default=None, type=click.DateTime(formats=["%Y-%m-%d"]),
              help="a platform-time-zone day (default yesterday)")
@click.option("--store", is_flag=True, help="also keep it for the admin console")
@click.option("--json", "as_json", is_flag=True)
def report(day, store: bool, as_json: bool) -> None:  # type: ignore[no-untyped-def]
    """The daily risk report."""
    from knowpay.risk.report import build_report, report_lines, store_daily_report, yesterday

    ctx = _context()
    when = day.date() if day else yesterday(ctx)
    body = store_daily_report(ctx, when) if store else build_report(ctx, when)
    if as_json:
        click.echo(json.dumps(body, ensure_ascii=False, indent=2))
        return
    for line in report_lines(body):
        click.echo(line)


@risk.group()
def rules() -> None:
    """List and change rule settings."""


@rules.command("list")
def rules_list() -> None:
    from knowpay.risk.service import rule_configs

    ctx = _context()
    with ctx.db.transaction(write=False) as session:
        configs = rule_configs(session)
    for config in configs:
        state = ("on " if config.enabled else "off") + (" shadow" if config.shadow else "")
        click.echo(f"{config.name:<14} {state:<10} {config.action!s:<9} fails {config.rule.fail:<6} "
                   f"{json.dumps(config.params.model_dump(mode='json'), ensure_ascii=False)}")


@rules.command("set")
@click.argument("name")
@click.option("--enable/--disable", "enabled", default=None)
@click.option("--shadow/--live", "shadow", default=None)
@click.option("--action", default=None, type=click.Choice(["allow", "challenge", "review", "block"]))
@click.option("--param", "pairs", multiple=True, metavar="KEY=JSON", help="one parameter, e.g. threshold=0.7")
@click.option("--params", default=None, help="parameters as one JSON object")
def rules_set(name: str, enabled: bool | None, shadow: bool | None, action: str | None, pairs: tuple[str, ...],
              params: str | None) -> None:
    """Change a rule; refused, naming the bad parameter, when the settings do not validate."""
    from knowpay.domain.errors import KnowPayError
    from knowpay.risk.service import update_rule

    changes: dict | None = None
    try:
        if params:
            changes = json.loads(params)
        for pair in pairs:
            key, sep, raw = pair.partition("=")
            if not sep:
                raise click.BadParameter(f"{pair!r} is not KEY=JSON", param_hint="--param")
            changes = {**(changes or {}), key: json.loads(raw)}
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON ({exc.msg})", param_hint="--param/--params") from None
    try:
        saved = update_rule(_context(), name, actor_id=None, enabled=enabled, action=action, shadow=shadow,
                            params=changes)
    except KnowPayError as exc:
        raise _fail(exc) from None
    click.echo(f"{saved.name}: {'on' if saved.enabled else 'off'}{' (shadow)' if saved.shadow else ''}, "
               f"{saved.action}, {json.dumps(saved.params.model_dump(mode='json'), ensure_ascii=False)}")


@risk.group()
def models() -> None:
    """Model versions."""


@models.command("list")
def models_list() -> None:
    from sqlalchemy import select

    from knowpay.risk.models import RiskModel

    ctx = _context()
    with ctx.db.transaction(write=False) as session:
        rows = session.execute(select(RiskModel.version, RiskModel.status, RiskModel.metrics, RiskModel.trained_at)
                               .order_by(RiskModel.version)).all()
    for version, status, m, at in rows:
        click.echo(f"v{version:<4} {status:<8} {at:%Y-%m-%d %H:%M}  precision {m['precision']:.4f}  "
                   f"recall {m['recall']:.4f}  ROC AUC {m['roc_auc']:.4f}")


@models.command("set")
@click.argument("version", type=int)
@click.argument("status", type=click.Choice(["active", "shadow", "retired"]))
def models_set(version: int, status: str) -> None:
    """Make a version active (the previous active one retires), shadow or retired."""
    from knowpay.domain.errors import KnowPayError
    from knowpay.risk.model import set_status

    try:
        set_status(_context(), version, status)
    except KnowPayError as exc:
        raise _fail(exc) from None
    click.echo(f"model v{version} is {status}")
