"""Post balanced, idempotent journal transactions and verify cached balances against postings."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple
from weakref import WeakKeyDictionary

from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, lazyload

from knowpay.domain.clock import Clock, SystemClock
from knowpay.domain.errors import InsufficientFunds, UnbalancedTransaction
from knowpay.ledger.models import JournalTransaction, LedgerAccount, Posting

DEBIT_NORMAL = frozenset({"asset", "expense"})
ACCOUNT_TYPES = frozenset({"asset", "liability", "equity", "revenue", "expense"})


@dataclass(frozen=True, slots=True)
class Leg:
    """One line of a transaction to post: a signed amount (debit +, credit −) on an account code."""

    account: str
    amount: int
    currency: str


@dataclass(frozen=True, slots=True)
class AccountSpec:
    """How to create an account the first time a leg names it."""

    code: str
    type: str
    currency: str
    allow_negative: bool = True
    owner_id: str | None = None


class _Account(NamedTuple):
    """What posting needs of an account; none of it ever changes once the account exists."""

    id: str
    type: str
    currency: str
    allow_negative: bool


# Accounts seen committed, by code, per engine: accounts are never deleted and these fields never
# change, so a capture need not read its 4-5 accounts again. Balances are never cached here.
_committed_accounts: WeakKeyDictionary[Engine, dict[str, _Account]] = WeakKeyDictionary()
# Codes of accounts created in a session's transaction: not cached from it, as it may yet roll back.
_CREATED_HERE = "knowpay.ledger.created_accounts"


def _accounts(session: Session, codes: set[str], specs: dict[str, AccountSpec], clock: Clock) -> dict[str, _Account]:
    """The accounts behind `codes`, from the cache, one read for the rest, and creation for those
    that do not exist yet and have a spec (the others are left out)."""
    cache = _committed_accounts.setdefault(session.get_bind(), {})
    known = {code: cache[code] for code in codes if code in cache}
    if len(known) < len(codes):
        created_here = session.info.get(_CREATED_HERE, set())
        for row in session.execute(select(LedgerAccount.code, LedgerAccount.id, LedgerAccount.type,
                                          LedgerAccount.currency, LedgerAccount.allow_negative)
                                   .where(LedgerAccount.code.in_(codes - known.keys()))):
            known[row.code] = _Account(row.id, row.type, row.currency, row.allow_negative)
            if row.code not in created_here:
                cache[row.code] = known[row.code]
    for code in sorted(codes - known.keys()):
        if code in specs:
            account = ensure_account(session, specs[code], clock=clock)
            known[code] = _Account(account.id, account.type, account.currency, account.allow_negative)
    return known


def normal_sign(account_type: str) -> int:
    """+1 when a debit increases the account's balance, −1 when a credit does."""
    return 1 if account_type in DEBIT_NORMAL else -1


def ensure_account(session: Session, spec: AccountSpec, *, clock: Clock | None = None) -> LedgerAccount:
    """Return the account with this code, creating it if it does not exist yet (race-safe)."""
    if spec.type not in ACCOUNT_TYPES:
        raise ValueError(f"unknown account type {spec.type!r}")
    found = session.scalar(select(LedgerAccount).where(LedgerAccount.code == spec.code))
    if found is not None:
        return found
    account = LedgerAccount(code=spec.code, type=spec.type, currency=spec.currency,
                            allow_negative=spec.allow_negative, owner_id=spec.owner_id, balance=0,
                            created_at=(clock or SystemClock()).now())
    try:
        with session.begin_nested():
            session.add(account)
    except IntegrityError:
        # Another transaction created it first; use theirs.
        return session.scalars(select(LedgerAccount).where(LedgerAccount.code == spec.code)).one()
    session.info.setdefault(_CREATED_HERE, set()).add(spec.code)
    return account


def check_balanced(legs: Sequence[Leg]) -> None:
    if len(legs) < 2:
        raise UnbalancedTransaction("A transaction needs at least two postings.")
    totals: dict[str, int] = defaultdict(int)
    for leg in legs:
        if isinstance(leg.amount, bool) or not isinstance(leg.amount, int):
            raise UnbalancedTransaction(f"Posting amount on {leg.account} is not an integer.")
        totals[leg.currency] += leg.amount
    unbalanced = {cur: total for cur, total in totals.items() if total != 0}
    if unbalanced:
        raise UnbalancedTransaction(f"Postings do not balance: {unbalanced}.")


def post_transaction(
    session: Session,
    *,
    key: str,
    kind: str,
    legs: Sequence[Leg],
    accounts: Iterable[AccountSpec] = (),
    description: str = "",
    meta: dict | None = None,
    clock: Clock | None = None,
) -> JournalTransaction:
    """Post `legs` as one balanced transaction, exactly once per `key`.

    A replay of a key returns the transaction already posted and posts nothing. Only accounts that
    forbid a negative balance keep a cached balance: those are locked in code order (no deadlocks
    between concurrent posters) and checked, and InsufficientFunds leaves nothing written. Every
    other account's balance is the sum of its postings, so busy shared accounts (clearing, fees)
    are never locked and concurrent captures do not queue behind each other.
    """
    existing = session.scalar(select(JournalTransaction).where(JournalTransaction.idempotency_key == key))
    if existing is not None:
        return existing
    check_balanced(legs)
    clock = clock or SystemClock()
    codes = {leg.account for leg in legs}
    known = _accounts(session, codes, {spec.code: spec for spec in accounts}, clock)
    missing = codes - known.keys()
    if missing:
        raise ValueError(f"unknown ledger accounts: {sorted(missing)}")
    deltas: dict[str, int] = defaultdict(int)
    for leg in legs:
        account = known[leg.account]
        if account.currency != leg.currency:
            raise UnbalancedTransaction(f"{leg.account} is in {account.currency}, not {leg.currency}.")
        deltas[leg.account] += leg.amount * normal_sign(account.type)
    guarded = sorted(code for code in deltas if not known[code].allow_negative)
    if guarded:
        # Lock, then read fresh under the lock: the ORM copy may predate another transaction's commit.
        current = dict(session.execute(
            select(LedgerAccount.code, LedgerAccount.balance).where(LedgerAccount.code.in_(guarded))
            .order_by(LedgerAccount.code).with_for_update()).all())
        for code in guarded:
            if current[code] + deltas[code] < 0:
                raise InsufficientFunds(f"Account {code} would go below zero ({current[code]} + {deltas[code]}).",
                                        code="insufficient_funds")
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    # One statement, no savepoint: a key a concurrent poster has just used inserts nothing.
    txn = session.scalar(
        dialect.insert(JournalTransaction)
        .values({JournalTransaction.idempotency_key: key, JournalTransaction.kind: kind,
                 JournalTransaction.description: description[:300], JournalTransaction.meta: meta or {},
                 JournalTransaction.created_at: clock.now()})
        .on_conflict_do_nothing(index_elements=["idempotency_key"]).returning(JournalTransaction)
        .options(lazyload(JournalTransaction.postings)))
    if txn is None:
        # That poster committed first: theirs stands.
        return session.scalars(
            select(JournalTransaction).where(JournalTransaction.idempotency_key == key)).one()
    session.execute(insert(Posting), [
        {"transaction_id": txn.id, "position": i, "account_id": known[leg.account].id, "amount": leg.amount,
         "currency": leg.currency}
        for i, leg in enumerate(legs)])
    for code in guarded:
        if deltas[code]:
            session.execute(update(LedgerAccount).where(LedgerAccount.code == code)
                            .values(balance=LedgerAccount.balance + deltas[code])
                            .execution_options(synchronize_session=False))
        # A copy of the account this session holds would show the balance from before.
        loaded = session.identity_map.get(session.identity_key(LedgerAccount, known[code].id))
        if loaded is not None:
            session.expire(loaded, ["balance"])
    return txn


def balance_of(session: Session, code: str) -> int:
    """The normal-side balance of an account (0 if it has never been used): the cached balance of an
    account that forbids going negative, else the sum of its postings."""
    row = session.execute(select(LedgerAccount.id, LedgerAccount.type, LedgerAccount.allow_negative,
                                 LedgerAccount.balance).where(LedgerAccount.code == code)).first()
    if row is None:
        return 0
    account_id, account_type, allow_negative, cached = row
    if not allow_negative:
        return cached
    total = session.scalar(select(func.coalesce(func.sum(Posting.amount), 0)).where(Posting.account_id == account_id))
    return int(total) * normal_sign(account_type)


@dataclass
class LedgerReport:
    """What `verify_ledger` found; `ok` when there is nothing in any list."""

    accounts_checked: int = 0
    transactions_checked: int = 0
    balance_mismatches: list[dict] = field(default_factory=list)
    unbalanced_transactions: list[dict] = field(default_factory=list)
    negative_balances: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.balance_mismatches or self.unbalanced_transactions or self.negative_balances)


def verify_ledger(session: Session) -> LedgerReport:
    """Recompute every balance from postings and check every transaction sums to zero per currency."""
    report = LedgerReport()
    sums = (select(Posting.account_id, func.sum(Posting.amount).label("total"))
            .group_by(Posting.account_id).subquery())
    # One statement, so one snapshot: on PostgreSQL (READ COMMITTED) separate queries for the sums
    # and the cached balances would see different commits and report false mismatches on a live system.
    accounts = session.execute(
        select(LedgerAccount.code, LedgerAccount.type, LedgerAccount.allow_negative, LedgerAccount.balance,
               sums.c.total)
        .outerjoin(sums, sums.c.account_id == LedgerAccount.id)
        .order_by(LedgerAccount.code))
    for code, account_type, allow_negative, cached, total in accounts:
        report.accounts_checked += 1
        recomputed = int(total or 0) * normal_sign(account_type)
        # Only accounts that forbid a negative balance keep a cached one (see post_transaction).
        if not allow_negative and recomputed != cached:
            report.balance_mismatches.append({"account": code, "cached": cached, "from_postings": recomputed})
        if not allow_negative and recomputed < 0:
            report.negative_balances.append({"account": code, "balance": recomputed})
    report.transactions_checked = session.scalar(select(func.count()).select_from(JournalTransaction)) or 0
    bad = session.execute(
        select(Posting.transaction_id, Posting.currency, func.sum(Posting.amount))
        .group_by(Posting.transaction_id, Posting.currency)
        .having(func.sum(Posting.amount) != 0)
    ).all()
    report.unbalanced_transactions = [{"transaction": t, "currency": c, "sum": int(s)} for t, c, s in bad]
    return report
