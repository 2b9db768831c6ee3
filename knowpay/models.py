"""Every table, imported so that `Base.metadata` knows them all (Alembic, tests)."""

from knowpay.accounts.models import AccessToken, ApiKey, Role, User
from knowpay.catalog.models import Product
from knowpay.db import Base
from knowpay.idempotency.models import IdempotencyKey
from knowpay.ledger.models import JournalTransaction, LedgerAccount, Posting
from knowpay.orders.models import Coupon, Order, OrderItem

__all__ = ["AccessToken", "ApiKey", "Base", "Coupon", "IdempotencyKey", "JournalTransaction", "LedgerAccount",
           "Order", "OrderItem", "Posting", "Product", "Role", "User"]
