"""Read a buyer's coin balance from the ledger."""

from __future__ import annotations

from sqlalchemy.orm import Session

from knowpay.ledger import chart
from knowpay.ledger.service import balance_of


def coin_balance(session: Session, user_id: str, currency: str) -> int:
    return balance_of(session, chart.wallet(user_id, currency).code)
