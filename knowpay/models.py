"""Every table, imported so that `Base.metadata` knows them all (Alembic, tests)."""

from knowpay.access.models import Entitlement
from knowpay.accounts.models import AccessToken, ApiKey, Role, User
from knowpay.catalog.models import Product
from knowpay.db import Base
from knowpay.idempotency.models import IdempotencyKey
from knowpay.ledger.models import JournalTransaction, LedgerAccount, Posting
from knowpay.orders.models import Coupon, Order, OrderItem
from knowpay.outbox.models import OutboxEvent, WebhookDelivery, WebhookEndpoint
from knowpay.payments.models import BankTransferReceipt, ChannelNotification, Payment
from knowpay.payouts.models import Payout, PayoutAccount
from knowpay.reconciliation.models import ReconciliationItem, ReconciliationRun
from knowpay.refunds.models import Refund

__all__ = ["AccessToken", "ApiKey", "BankTransferReceipt", "Base", "ChannelNotification", "Coupon", "Entitlement", "IdempotencyKey",
           "JournalTransaction", "LedgerAccount", "Order", "OrderItem", "OutboxEvent", "Payment", "Posting",
           "Payout", "PayoutAccount", "Product", "ReconciliationItem",
           "ReconciliationRun", "Refund", "Role", "User", "WebhookDelivery", "WebhookEndpoint"]
