"""`knowpay users create` applies the password policy like the API does."""

from __future__ import annotations

from click.testing import CliRunner

from knowpay.cli import main


def test_users_create_refuses_a_listed_password_and_takes_a_good_one(sqlite_url, tmp_path):
    env = {"KNOWPAY_DATABASE_URL": sqlite_url, "KNOWPAY_INSTANCE_PATH": str(tmp_path)}
    runner = CliRunner()
    refused = runner.invoke(main, ["users", "create", "--email", "ann@example.com", "--password", "Password123"],
                            env=env, catch_exceptions=False)
    assert refused.exit_code == 1
    assert "too common" in refused.output
    made = runner.invoke(main, ["users", "create", "--email", "ann@example.com", "--password", "long-enough-1",
                                "--role", "admin"], env=env, catch_exceptions=False)
    assert made.exit_code == 0, made.output
