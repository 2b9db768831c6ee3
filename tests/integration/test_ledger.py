"""The double-entry ledger on a real database (SQLite and PostgreSQL), told as worked examples.

Invariant: every transaction's postings sum to zero per currency, each account's cached balance
equals the sum of its postings on its normal side, and an account that forbids it never goes
below zero — also while several threads post at once. Postings are never changed or removed.
"""

from __future__ import annotations

import random
import threading
from collections import Counter, defaultdict

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from knowpay.domain.errors import InsufficientFunds, UnbalancedTransaction
from knowpay.ledger.models import AppendOnlyViolation, JournalTransaction, LedgerAccount, Posting
from knowpay.ledger.service import AccountSpec, Leg, balance_of, post_transaction, verify_ledger

CLEARING = AccountSpec("clearing:alipay:cny", "asset", "cny")
CREATOR = AccountSpec("creator:usr_c1:pending:cny", "liability", "cny", owner_id="usr_c1")
PLATFORM_FEES = AccountSpec("platform:fees:cny", "revenue", "cny")
PROMOTION = AccountSpec("promotion:cny", "expense", "cny")
WALLET = AccountSpec("wallet:usr_b1:cny", "liability", "cny", allow_negative=False, owner_id="usr_b1")
SALE_ACCOUNTS = (CLEARING, CREATOR, PLATFORM_FEES)


def sale_legs(total: int = 9900, fee: int = 990) -> list[Leg]:
    """A sale through Alipay: clearing receives the total, the creator is owed it less the platform fee."""
    return [Leg(CLEARING.code, total, "cny"), Leg(CREATOR.code, -(total - fee), "cny"),
            Leg(PLATFORM_FEES.code, -fee, "cny")]


def post_sale(db, clock, key: str = "payment:pay_1:captured", **amounts) -> str:
    with db.transaction() as session:
        txn = post_transaction(session, key=key, kind="payment_captured", legs=sale_legs(**amounts),
                               accounts=SALE_ACCOUNTS, description="Course A", clock=clock)
        return txn.id


def count(db, model) -> int:
    with db.transaction(write=False) as session:
        return session.scalar(select(func.count()).select_from(model))


def balances(db) -> dict[str, int]:
    with db.transaction(write=False) as session:
        return {code: balance_of(session, code) for code in session.scalars(select(LedgerAccount.code))}


def fund_wallet(db, clock, coins: int) -> None:
    """Give the buyer `coins` bonus coins, funded by the platform's promotion budget."""
    with db.transaction() as session:
        post_transaction(session, key=f"bonus:{coins}", kind="bonus_coins", clock=clock,
                         legs=[Leg(PROMOTION.code, coins, "cny"), Leg(WALLET.code, -coins, "cny")],
                         accounts=[PROMOTION, WALLET])


# --- worked examples --------------------------------------------------------------------------


def test_a_99_yuan_sale_debits_clearing_and_credits_creator_and_platform(db, clock):
    txn_id = post_sale(db, clock)

    with db.transaction(write=False) as session:
        txn = session.get(JournalTransaction, txn_id)
        assert (txn.idempotency_key, txn.kind, txn.description) == (
            "payment:pay_1:captured", "payment_captured", "Course A")
        assert txn.created_at == clock.now()
        codes = dict(session.execute(select(LedgerAccount.id, LedgerAccount.code)).all())
        assert [(p.position, codes[p.account_id], p.amount, p.currency) for p in txn.postings] == [
            (0, "clearing:alipay:cny", 9900, "cny"),
            (1, "creator:usr_c1:pending:cny", -8910, "cny"),
            (2, "platform:fees:cny", -990, "cny"),
        ]
        # Balances are on each account's normal side: the asset is up by its debit,
        # the liability and the revenue are up by their credits.
        assert balance_of(session, "clearing:alipay:cny") == 9900
        assert balance_of(session, "creator:usr_c1:pending:cny") == 8910
        assert balance_of(session, "platform:fees:cny") == 990
        assert balance_of(session, "never:used") == 0
        creator = session.scalar(select(LedgerAccount).where(LedgerAccount.code == CREATOR.code))
        assert (creator.type, creator.currency, creator.owner_id, creator.allow_negative) == (
            "liability", "cny", "usr_c1", True)


def test_a_refund_is_a_reversing_transaction_and_the_sale_stays_on_the_books(db, clock):
    post_sale(db, clock)
    with db.transaction() as session:
        post_transaction(session, key="refund:re_1:succeeded", kind="refund_succeeded", clock=clock,
                         legs=[Leg(leg.account, -leg.amount, leg.currency) for leg in sale_legs()])

    assert balances(db) == {"clearing:alipay:cny": 0, "creator:usr_c1:pending:cny": 0, "platform:fees:cny": 0}
    assert count(db, JournalTransaction) == 2
    assert count(db, Posting) == 6
    with db.transaction(write=False) as session:
        assert verify_ledger(session).ok


def test_two_sales_accumulate_on_the_same_accounts(db, clock):
    post_sale(db, clock, key="payment:pay_1:captured")
    post_sale(db, clock, key="payment:pay_2:captured", total=1990, fee=199)

    assert balances(db) == {"clearing:alipay:cny": 11890, "creator:usr_c1:pending:cny": 10701,
                            "platform:fees:cny": 1189}
    assert count(db, LedgerAccount) == 3


def test_a_transaction_may_balance_in_several_currencies_at_once(db, clock):
    jpy_clearing = AccountSpec("clearing:stripe:jpy", "asset", "jpy")
    jpy_fees = AccountSpec("platform:fees:jpy", "revenue", "jpy")
    with db.transaction() as session:
        post_transaction(session, key="fx:1", kind="test", clock=clock,
                         accounts=[CLEARING, PLATFORM_FEES, jpy_clearing, jpy_fees],
                         legs=[Leg(CLEARING.code, 100, "cny"), Leg(PLATFORM_FEES.code, -100, "cny"),
                               Leg(jpy_clearing.code, 15, "jpy"), Leg(jpy_fees.code, -15, "jpy")])

    assert balances(db) == {"clearing:alipay:cny": 100, "platform:fees:cny": 100,
                            "clearing:stripe:jpy": 15, "platform:fees:jpy": 15}


# --- what the ledger refuses ------------------------------------------------------------------


@pytest.mark.parametrize("legs", [
    pytest.param([Leg(CLEARING.code, 9900, "cny"), Leg(CREATOR.code, -8910, "cny"),
                  Leg(PLATFORM_FEES.code, -989, "cny")], id="one-fen-short"),
    pytest.param([Leg(CLEARING.code, 9900, "cny")], id="a-single-leg"),
    pytest.param([], id="no-legs"),
    pytest.param([Leg(CLEARING.code, 100, "cny"), Leg(CREATOR.code, -100, "jpy")],
                 id="balanced-only-across-currencies"),
    pytest.param([Leg(CLEARING.code, 99.0, "cny"), Leg(CREATOR.code, -99.0, "cny")], id="float-amounts"),
])
def test_an_unbalanced_transaction_raises_and_writes_nothing(db, clock, legs):
    with pytest.raises(UnbalancedTransaction), db.transaction() as session:
        post_transaction(session, key="bad:1", kind="test", legs=legs, accounts=SALE_ACCOUNTS, clock=clock)

    assert (count(db, JournalTransaction), count(db, Posting), count(db, LedgerAccount)) == (0, 0, 0)


def test_an_unbalanced_transaction_leaves_the_rest_of_the_unit_of_work_intact(db, clock):
    with db.transaction() as session:
        post_transaction(session, key="payment:pay_1:captured", kind="payment_captured", legs=sale_legs(),
                         accounts=SALE_ACCOUNTS, clock=clock)
        with pytest.raises(UnbalancedTransaction):
            post_transaction(session, key="bad:1", kind="test", clock=clock,
                             legs=[Leg(CLEARING.code, 1, "cny"), Leg(CREATOR.code, -2, "cny")])

    assert count(db, JournalTransaction) == 1
    assert balances(db)["clearing:alipay:cny"] == 9900


def test_replaying_a_key_posts_nothing_twice_and_returns_the_same_transaction(db, clock):
    first = post_sale(db, clock)
    with db.transaction() as session:
        again = post_transaction(session, key="payment:pay_1:captured", kind="payment_captured",
                                 legs=sale_legs(), accounts=SALE_ACCOUNTS, clock=clock)
        # Even different legs under the same key change nothing: the first posting stands.
        other = post_transaction(session, key="payment:pay_1:captured", kind="other",
                                 legs=sale_legs(total=100, fee=10), accounts=SALE_ACCOUNTS, clock=clock)
        assert again.id == other.id == first
        assert [p.amount for p in again.postings] == [9900, -8910, -990]

    assert (count(db, JournalTransaction), count(db, Posting)) == (1, 3)
    assert balances(db) == {"clearing:alipay:cny": 9900, "creator:usr_c1:pending:cny": 8910,
                            "platform:fees:cny": 990}


def test_replaying_a_key_within_one_unit_of_work_posts_once(db, clock):
    with db.transaction() as session:
        ids = {post_transaction(session, key="k", kind="test", legs=sale_legs(), accounts=SALE_ACCOUNTS,
                                clock=clock).id for _ in range(3)}
    assert len(ids) == 1
    assert (count(db, JournalTransaction), count(db, Posting)) == (1, 3)
    assert balances(db)["clearing:alipay:cny"] == 9900


def test_a_leg_in_another_currency_than_its_account_raises_and_writes_nothing(db, clock):
    post_sale(db, clock)
    jpy_fees = AccountSpec("platform:fees:jpy", "revenue", "jpy")
    with pytest.raises(UnbalancedTransaction, match="clearing:alipay:cny is in cny, not jpy"), \
            db.transaction() as session:
        post_transaction(session, key="mixed:1", kind="test", clock=clock, accounts=[jpy_fees],
                         legs=[Leg(CLEARING.code, 500, "jpy"), Leg(jpy_fees.code, -500, "jpy")])

    assert (count(db, JournalTransaction), count(db, Posting)) == (1, 3)
    assert "platform:fees:jpy" not in balances(db)
    assert balances(db)["clearing:alipay:cny"] == 9900


def test_a_leg_on_an_account_nobody_described_is_refused(db, clock):
    with pytest.raises(ValueError, match="unknown ledger accounts.*nowhere"), db.transaction() as session:
        post_transaction(session, key="k", kind="test", clock=clock, accounts=[CLEARING],
                         legs=[Leg(CLEARING.code, 1, "cny"), Leg("nowhere", -1, "cny")])
    assert (count(db, JournalTransaction), count(db, LedgerAccount)) == (0, 0)


def test_a_wallet_may_be_spent_down_to_exactly_zero(db, clock):
    fund_wallet(db, clock, 500)
    with db.transaction() as session:
        post_transaction(session, key="spend:1", kind="wallet_payment", clock=clock, accounts=[PLATFORM_FEES],
                         legs=[Leg(WALLET.code, 500, "cny"), Leg(PLATFORM_FEES.code, -500, "cny")])
    assert balances(db)[WALLET.code] == 0


def test_an_account_that_forbids_a_negative_balance_refuses_and_nothing_is_written(db, clock):
    fund_wallet(db, clock, 500)
    with pytest.raises(InsufficientFunds) as caught, db.transaction() as session:
        post_transaction(session, key="spend:1", kind="wallet_payment", clock=clock, accounts=[PLATFORM_FEES],
                         legs=[Leg(WALLET.code, 600, "cny"), Leg(PLATFORM_FEES.code, -600, "cny")])

    assert caught.value.code == "insufficient_funds"
    assert WALLET.code in caught.value.message
    assert (count(db, JournalTransaction), count(db, Posting)) == (1, 2)
    assert balances(db)[WALLET.code] == 500
    assert "platform:fees:cny" not in balances(db)  # not even the account the refused posting named


def test_a_refused_posting_writes_nothing_even_when_the_caller_carries_on_and_commits(db, clock):
    fund_wallet(db, clock, 500)
    with db.transaction() as session:
        with pytest.raises(InsufficientFunds):
            post_transaction(session, key="spend:1", kind="wallet_payment", clock=clock,
                             legs=[Leg(WALLET.code, 501, "cny"), Leg(PROMOTION.code, -501, "cny")])
        post_transaction(session, key="spend:2", kind="wallet_payment", clock=clock,
                         legs=[Leg(WALLET.code, 200, "cny"), Leg(PROMOTION.code, -200, "cny")])

    with db.transaction(write=False) as session:
        keys = set(session.scalars(select(JournalTransaction.idempotency_key)))
        assert verify_ledger(session).ok
    assert keys == {"bonus:500", "spend:2"}
    assert balances(db) == {PROMOTION.code: 300, WALLET.code: 300}


def test_the_negative_check_counts_every_leg_on_the_same_account(db, clock):
    fund_wallet(db, clock, 500)
    with pytest.raises(InsufficientFunds), db.transaction() as session:
        post_transaction(session, key="spend:1", kind="wallet_payment", clock=clock,
                         legs=[Leg(WALLET.code, 300, "cny"), Leg(WALLET.code, 300, "cny"),
                               Leg(PROMOTION.code, -600, "cny")])
    assert balances(db)[WALLET.code] == 500


def test_an_asset_that_forbids_a_negative_balance_refuses_a_credit_beyond_it(db, clock):
    cash = AccountSpec("cash:cny", "asset", "cny", allow_negative=False)
    equity = AccountSpec("equity:opening:cny", "equity", "cny")
    with db.transaction() as session:
        post_transaction(session, key="open", kind="opening", clock=clock, accounts=[cash, equity],
                         legs=[Leg(cash.code, 1000, "cny"), Leg(equity.code, -1000, "cny")])
    with pytest.raises(InsufficientFunds), db.transaction() as session:
        post_transaction(session, key="pay", kind="test", clock=clock, accounts=[PROMOTION],
                         legs=[Leg(PROMOTION.code, 1001, "cny"), Leg(cash.code, -1001, "cny")])
    assert balances(db) == {"cash:cny": 1000, "equity:opening:cny": 1000}


# --- append-only, enforced by the database itself ---------------------------------------------


@pytest.mark.parametrize("statement", [
    "UPDATE postings SET amount = amount + 1",
    "UPDATE postings SET account_id = account_id",
    "DELETE FROM postings",
    "UPDATE journal_transactions SET kind = 'rewritten'",
    "DELETE FROM journal_transactions",
])
def test_the_database_refuses_to_change_or_remove_posted_history(db, clock, statement):
    txn_id = post_sale(db, clock)

    with pytest.raises(DBAPIError, match="append-only"), db.engine.begin() as conn:
        conn.execute(text(statement))

    with db.transaction(write=False) as session:
        txn = session.get(JournalTransaction, txn_id)
        assert txn.kind == "payment_captured"
        assert [p.amount for p in txn.postings] == [9900, -8910, -990]


@pytest.mark.parametrize("change", [
    pytest.param(lambda session, txn: setattr(txn.postings[0], "amount", 1), id="update-posting"),
    pytest.param(lambda session, txn: session.delete(txn.postings[0]), id="delete-posting"),
    pytest.param(lambda session, txn: setattr(txn, "kind", "rewritten"), id="update-transaction"),
    pytest.param(lambda session, txn: session.delete(txn), id="delete-transaction"),
])
def test_the_code_refuses_to_change_or_remove_posted_history_before_asking_the_database(db, clock, change):
    txn_id = post_sale(db, clock)

    with pytest.raises(AppendOnlyViolation, match="append-only"), db.transaction() as session:
        change(session, session.get(JournalTransaction, txn_id))
        session.flush()

    with db.transaction(write=False) as session:
        assert verify_ledger(session).ok
    assert count(db, Posting) == 3


# --- verify -----------------------------------------------------------------------------------


def test_verify_is_clean_after_postings(db, clock):
    post_sale(db, clock, key="payment:pay_1:captured")
    post_sale(db, clock, key="payment:pay_2:captured", total=1990, fee=199)
    fund_wallet(db, clock, 500)

    with db.transaction(write=False) as session:
        report = verify_ledger(session)
    assert report.ok
    assert (report.accounts_checked, report.transactions_checked) == (5, 3)
    assert report.balance_mismatches == report.unbalanced_transactions == report.negative_balances == []


def test_verify_reports_a_cached_balance_that_was_tampered_with(db, clock):
    fund_wallet(db, clock, 500)
    with db.engine.begin() as conn:
        conn.execute(text(f"UPDATE ledger_accounts SET balance = 10000 WHERE code = '{WALLET.code}'"))

    with db.transaction(write=False) as session:
        report = verify_ledger(session)
    assert not report.ok
    assert report.balance_mismatches == [{"account": WALLET.code, "cached": 10000, "from_postings": 500}]
    assert report.unbalanced_transactions == []


def test_accounts_that_may_go_negative_keep_no_cached_balance_but_report_their_postings(db, clock):
    post_sale(db, clock)
    with db.transaction(write=False) as session:
        cached = session.scalar(select(LedgerAccount.balance).where(LedgerAccount.code == CLEARING.code))
        assert (cached, balance_of(session, CLEARING.code)) == (0, 9900)


def test_verify_reports_a_stray_posting_as_unbalanced_and_as_a_mismatch(db, clock):
    post_sale(db, clock)
    fund_wallet(db, clock, 8910)
    with db.transaction(write=False) as session:
        txn_id = session.scalar(select(JournalTransaction.id).where(JournalTransaction.kind == "bonus_coins"))
        account_id = session.scalar(select(LedgerAccount.id).where(LedgerAccount.code == WALLET.code))
    # Inserting is all the triggers allow; a stray line added behind the service's back must show.
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO postings (id, transaction_id, position, account_id, amount, currency) "
                          "VALUES ('pst_stray', :t, 3, :a, -1, 'cny')"), {"t": txn_id, "a": account_id})

    with db.transaction(write=False) as session:
        report = verify_ledger(session)
    assert not report.ok
    assert report.unbalanced_transactions == [{"transaction": txn_id, "currency": "cny", "sum": -1}]
    assert report.balance_mismatches == [
        {"account": WALLET.code, "cached": 8910, "from_postings": 8911}]


def test_verify_reports_a_forbidden_negative_balance(db, clock):
    fund_wallet(db, clock, 500)
    with db.transaction() as session:
        # A debit of 600 on a 500-coin wallet can only be posted behind the service's back.
        txn = JournalTransaction(idempotency_key="raw", kind="raw", description="", meta={},
                                 created_at=clock.now())
        session.add(txn)
        session.flush()
        ids = dict(session.execute(select(LedgerAccount.code, LedgerAccount.id)).all())
        # Appending to a posted transaction's collection is an insert, which append-only allows.
        txn.postings.extend([
            Posting(position=0, account_id=ids[WALLET.code], amount=600, currency="cny"),
            Posting(position=1, account_id=ids[PROMOTION.code], amount=-600, currency="cny"),
        ])

    with db.transaction(write=False) as session:
        report = verify_ledger(session)
    assert {"account": WALLET.code, "balance": -100} in report.negative_balances
    assert {"account": WALLET.code, "cached": 500, "from_postings": -100} in report.balance_mismatches
    assert not report.ok


# --- concurrency ------------------------------------------------------------------------------


THREADS = 8
TRANSFERS_PER_THREAD = 50
SHARED_KEYS = 5
OPENING = {"cny": 3000, "jpy": 300}


def test_accounts_first_used_by_several_threads_at_once_are_created_once(db, clock):
    start = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def sell(n: int) -> None:
        try:
            start.wait()
            post_sale(db, clock, key=f"payment:pay_{n}:captured")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=sell, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not any(t.is_alive() for t in threads), "a posting thread hung"
    assert errors == []
    assert count(db, LedgerAccount) == 3
    assert balances(db) == {"clearing:alipay:cny": 9900 * THREADS,
                            "creator:usr_c1:pending:cny": 8910 * THREADS,
                            "platform:fees:cny": 990 * THREADS}


def _chart() -> dict[str, list[AccountSpec]]:
    """Per currency: three wallets that may not go negative and two accounts that may."""
    chart: dict[str, list[AccountSpec]] = {}
    for currency in OPENING:
        chart[currency] = [
            *(AccountSpec(f"wallet:u{n}:{currency}", "liability", currency, allow_negative=False)
              for n in range(3)),
            AccountSpec(f"house:{currency}", "liability", currency),
            AccountSpec(f"suspense:{currency}", "asset", currency),
        ]
    return chart


def _random_legs(rng: random.Random, chart: dict[str, list[AccountSpec]]) -> list[Leg]:
    currency = rng.choice(sorted(chart))
    payer, *payees = rng.sample(chart[currency], rng.choice((2, 2, 3)))
    amounts = [rng.randint(1, OPENING[currency] // 3) for _ in payees]
    return [Leg(payer.code, sum(amounts), currency),
            *(Leg(p.code, -a, currency) for p, a in zip(payees, amounts, strict=True))]


@pytest.mark.slow
def test_concurrent_random_transfers_keep_the_ledger_balanced_and_never_overdraw(db, clock):
    chart = _chart()
    specs = [spec for accounts in chart.values() for spec in accounts]
    with db.transaction() as session:
        for currency, accounts in chart.items():
            equity = AccountSpec(f"equity:opening:{currency}", "equity", currency)
            for spec in accounts:
                post_transaction(session, key=f"opening:{spec.code}", kind="opening", clock=clock,
                                 accounts=[spec, equity], legs=[Leg(equity.code, OPENING[currency], currency),
                                                                Leg(spec.code, -OPENING[currency], currency)])
    opening_balances = balances(db)
    opening_transactions = count(db, JournalTransaction)

    lock = threading.Lock()
    posted: list[list[Leg]] = []       # legs of every transfer a thread saw go through
    refused: list[str] = []
    shared_ids: dict[str, set[str]] = defaultdict(set)
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def worker(n: int) -> None:
        rng = random.Random(n)
        try:
            start.wait()
            for i in range(TRANSFERS_PER_THREAD):
                legs = _random_legs(rng, chart)
                try:
                    with db.transaction() as session:
                        post_transaction(session, key=f"transfer:{n}:{i}", kind="transfer", legs=legs,
                                         accounts=specs, clock=clock)
                except InsufficientFunds:
                    with lock:
                        refused.append(f"{n}:{i}")
                else:
                    with lock:
                        posted.append(legs)
                if i % 10 == 0:
                    # Every thread posts the same keys too: each must be posted by exactly one of them.
                    key = f"shared:{i // 10}"
                    with db.transaction() as session:
                        txn = post_transaction(
                            session, key=key, kind="shared", accounts=specs, clock=clock,
                            legs=[Leg("suspense:cny", 7, "cny"), Leg("house:cny", -7, "cny")])
                        txn_id = txn.id
                    with lock:
                        shared_ids[key].add(txn_id)
        except BaseException as exc:  # noqa: BLE001 - reported below, with the thread's traceback
            with lock:
                errors.append(exc)

    live_reports = []
    finished = threading.Event()

    def verifier() -> None:
        # verify runs on a live system too: it must never see a half-counted transaction.
        try:
            while not finished.wait(0.02):
                with db.transaction(write=False) as session:
                    live_reports.append(verify_ledger(session))
        except BaseException as exc:  # noqa: BLE001
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    checker = threading.Thread(target=verifier)
    checker.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    finished.set()
    checker.join(timeout=30)
    assert not any(t.is_alive() for t in [*threads, checker]), "a thread hung"
    assert errors == [], f"threads failed: {errors!r}"
    assert live_reports
    assert [r for r in live_reports if not r.ok] == []

    assert len(posted) + len(refused) == THREADS * TRANSFERS_PER_THREAD
    assert refused, "no transfer was ever refused: the test did not press the no-overdraft rule"
    assert len(shared_ids) == SHARED_KEYS
    assert all(len(ids) == 1 for ids in shared_ids.values()), shared_ids

    with db.transaction(write=False) as session:
        per_currency = dict(session.execute(
            select(Posting.currency, func.sum(Posting.amount)).group_by(Posting.currency)).all())
        forbidden_negative = session.scalars(select(LedgerAccount.code).where(
            LedgerAccount.allow_negative.is_(False), LedgerAccount.balance < 0)).all()
        kinds = Counter(session.scalars(select(JournalTransaction.kind)))
        postings = session.scalar(select(func.count()).select_from(Posting))
        report = verify_ledger(session)

    assert {currency: int(total) for currency, total in per_currency.items()} == {"cny": 0, "jpy": 0}
    assert forbidden_negative == []
    assert report.ok, report
    assert kinds == {"opening": opening_transactions, "transfer": len(posted), "shared": SHARED_KEYS}
    assert postings == 2 * opening_transactions + sum(len(legs) for legs in posted) + 2 * SHARED_KEYS

    # The cached balances are exactly the openings moved by the transfers the threads saw succeed.
    expected = Counter(opening_balances)
    for legs in posted:
        for leg in legs:
            credit_normal = leg.account.startswith(("wallet", "house"))
            expected[leg.account] += -leg.amount if credit_normal else leg.amount
    expected["suspense:cny"] += 7 * SHARED_KEYS
    expected["house:cny"] += 7 * SHARED_KEYS
    assert balances(db) == dict(expected)
