"""The audit log is append-only and hash-chained: code cannot change it, and `knowpay audit verify`
finds an edited, deleted or cut-off entry, naming the first broken one."""

from __future__ import annotations

import gc
import itertools

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, text, update

from knowpay.cli import main
from knowpay.security import audit
from knowpay.security.models import AuditEntry, AuditLogIsAppendOnly


@pytest.fixture
def entries(db, clock) -> list[AuditEntry]:
    """Five entries, as refunds, payouts, logins and role changes write them."""
    rows = []
    with db.transaction() as session:
        for n, (action, target) in enumerate([("auth.login_succeeded", "usr_a"), ("refund.created", "ref_1"),
                                              ("payout.approved", "pyo_1"), ("user.roles_changed", "usr_b"),
                                              ("settings.changed", None)]):
            clock.advance(seconds=1)
            rows.append(audit.record(session, "usr_admin", action, target, {"n": n, "note": "提现"}, clock))
    return rows


def verify(db, *args: str):
    env = {"KNOWPAY_DATABASE_URL": db.url, "KNOWPAY_INSTANCE_PATH": "/tmp/knowpay-audit-test"}
    result = CliRunner().invoke(main, ["audit", "verify", *args], env=env, catch_exceptions=False)
    gc.collect()  # the command's engine closes its connections, as a finished process would
    return result


def raw(db, sql: str, **params) -> None:
    """Change the table behind the application's back, as someone with database access could."""
    with db.engine.begin() as conn:
        conn.execute(text(sql), params)


def test_each_entry_links_to_the_one_before(entries):
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_hash == audit.GENESIS
    assert all(later.prev_hash == earlier.hash for earlier, later in itertools.pairwise(entries))


def test_an_intact_log_verifies_and_prints_its_head(db, entries):
    result = verify(db)
    assert result.exit_code == 0, result.output
    assert f"5 entries; head 5:{entries[-1].hash}" in result.output
    assert verify(db, "--anchor", f"3:{entries[2].hash}").exit_code == 0


def test_an_empty_log_verifies(db):
    assert verify(db).exit_code == 0


def test_an_edited_entry_is_found(db, entries):
    raw(db, "UPDATE audit_entries SET details = :d WHERE seq = 3", d='{"n":2,"note":"nothing to see"}')
    result = verify(db)
    assert result.exit_code == 1
    assert "BROKEN at entry 3: entry 3 was altered" in result.output


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(db, entries):
    forged = audit.entry_hash(seq=2, created_at=entries[1].created_at.isoformat(), actor_id="usr_admin",
                              action="refund.created", target="ref_1", details='{"n":1}', prev_hash=entries[0].hash)
    raw(db, "UPDATE audit_entries SET details = :d, hash = :h WHERE seq = 2", d='{"n":1}', h=forged)
    result = verify(db)
    assert result.exit_code == 1
    assert "BROKEN at entry 3: entry 3 does not link to entry 2" in result.output


def test_a_deleted_entry_is_found(db, entries):
    raw(db, "DELETE FROM audit_entries WHERE seq = 2")
    result = verify(db)
    assert result.exit_code == 1
    assert "BROKEN at entry 2: entry 2 is missing (deleted)" in result.output


def test_cutting_off_the_end_is_found_against_an_anchor(db, entries):
    raw(db, "DELETE FROM audit_entries WHERE seq >= 4")
    assert verify(db).exit_code == 0  # a shorter chain is still a chain ...
    result = verify(db, "--anchor", f"5:{entries[4].hash}")
    assert result.exit_code == 1  # ... but not the one recorded earlier
    assert "entry 5 and any after it are missing" in result.output


def test_code_cannot_change_or_delete_entries(db, entries):
    with db.transaction() as session, pytest.raises(AuditLogIsAppendOnly):
        session.get(AuditEntry, 1).action = "nothing.happened"
        session.flush()
    with db.transaction() as session, pytest.raises(AuditLogIsAppendOnly):
        session.delete(session.get(AuditEntry, 2))
        session.flush()
    with db.transaction() as session, pytest.raises(AuditLogIsAppendOnly):
        session.execute(update(AuditEntry).where(AuditEntry.seq == 3).values(actor_id="usr_else"))
    with db.transaction() as session, pytest.raises(AuditLogIsAppendOnly):
        session.execute(delete(AuditEntry))
    assert verify(db).exit_code == 0


def test_an_entry_rolls_back_with_its_transaction(db, clock, entries):
    with pytest.raises(RuntimeError), db.transaction() as session:
        audit.record(session, "usr_admin", "payout.approved", "pyo_2", None, clock)
        raise RuntimeError("the approval failed")
    with db.transaction() as session:
        sixth = audit.record(session, "usr_admin", "payout.approved", "pyo_2", None, clock)
    assert sixth.seq == 6 and sixth.prev_hash == entries[-1].hash
    assert verify(db).exit_code == 0
