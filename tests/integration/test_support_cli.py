"""`knowpay support faq`: seed the FAQ, list it, try a question, refuse a malformed file."""

from __future__ import annotations

from click.testing import CliRunner
from sqlalchemy import select

from knowpay.cli import main
from knowpay.support.models import FaqEntry


def test_support_faq_seeds_lists_and_answers_from_the_command_line(settings):
    env = {"KNOWPAY_DATABASE_URL": settings.database_url, "KNOWPAY_INSTANCE_PATH": str(settings.instance_path)}
    runner = CliRunner()
    seeded = runner.invoke(main, ["support", "faq", "--seed"], env=env, catch_exceptions=False)
    assert seeded.exit_code == 0 and "FAQ entries added: 28" in seeded.output
    again = runner.invoke(main, ["support", "faq", "--seed"], env=env, catch_exceptions=False)
    assert "FAQ entries added: 0" in again.output
    listed = runner.invoke(main, ["support", "faq"], env=env, catch_exceptions=False)
    assert "[zh-CN] pay.alipay: 怎么用支付宝付款？" in listed.output
    asked = runner.invoke(main, ["support", "faq", "--ask", "退款多久能到账"], env=env, catch_exceptions=False)
    assert asked.output.splitlines()[0].split()[1:3] == ["answers", "#" + asked.output.split("#")[1].split()[0]]
    assert "退款多久到账？" in asked.output.splitlines()[0]


def test_support_faq_refuses_a_malformed_file_and_adds_nothing(settings, ctx, tmp_path):
    bad = tmp_path / "faq.json"
    bad.write_text('[{"locale": "en", "question": "Q?"}]', encoding="utf-8")
    env = {"KNOWPAY_DATABASE_URL": settings.database_url, "KNOWPAY_INSTANCE_PATH": str(settings.instance_path)}
    result = CliRunner().invoke(main, ["support", "faq", "--load", str(bad)], env=env)
    assert result.exit_code != 0 and "needs locale, question and answer" in result.output
    with ctx.db.transaction(write=False) as session:
        assert session.scalars(select(FaqEntry)).all() == []
