"""Every table, imported so that `Base.metadata` knows them all (Alembic, tests)."""

from knowpay.access.models import Entitlement
from knowpay.accounts.models import AccessToken, ApiKey, Role, User
from knowpay.analytics.models import AnalyticsSetting, Anomaly, ChannelStat, PageView  # noqa: F401
from knowpay.catalog.models import Product
from knowpay.db import Base
from knowpay.idempotency.models import IdempotencyKey
from knowpay.ledger.models import JournalTransaction, LedgerAccount, Posting
from knowpay.orders.models import Coupon, Order, OrderItem
from knowpay.outbox.models import OutboxEvent, WebhookDelivery, WebhookEndpoint
from knowpay.payments.models import BankTransferReceipt, ChannelNotification, Payment
from knowpay.payouts.models import Payout, PayoutAccount
from knowpay.recommend.models import RecommendHolding, RecommendItem, RecommendPair, RecommendState  # noqa: F401
from knowpay.reconciliation.models import ReconciliationItem, ReconciliationRun
from knowpay.refunds.models import Refund
from knowpay.risk.models import RiskDecision, RiskRule  # noqa: F401 - and the other risk tables
from knowpay.support.models import FaqEntry, Ticket, TicketEntry  # noqa: F401

__all__ = ["AccessToken", "ApiKey", "BankTransferReceipt", "Base", "ChannelNotification", "Coupon", "Entitlement", "IdempotencyKey",
           "JournalTransaction", "LedgerAccount", "Order", "OrderItem", "OutboxEvent", "Payment", "Posting",
           "Payout", "PayoutAccount", "Product", "ReconciliationItem",
           "ReconciliationRun", "Refund", "Role", "User", "WebhookDelivery", "WebhookEndpoint"]
