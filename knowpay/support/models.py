"""Support tables: tickets on a buyer's order or payment, their timeline, and the admin-edited FAQ."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from knowpay.db import Base
from knowpay.domain.ids import new_id


class Ticket(Base):
    """A buyer's request for help, about one of their orders or payments (or neither)."""

    __tablename__ = "tickets"
    __table_args__ = (
        Index("ix_tickets_buyer_created", "buyer_id", "created_at"),
        Index("ix_tickets_status_created", "status", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("tkt"))
    buyer_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    order_id: Mapped[str | None] = mapped_column(ForeignKey("orders.id"), index=True)
    payment_id: Mapped[str | None] = mapped_column(ForeignKey("payments.id"))
    subject: Mapped[str] = mapped_column(String(200))
    # paid_no_access | payment_stuck | wrong_amount | refund | receipt | other
    category: Mapped[str] = mapped_column(String(24), default="other")
    status: Mapped[str] = mapped_column(String(24), default="open")  # open, waiting_on_buyer, resolved
    # How many entries the timeline holds: the next entry's `seq`, taken under the ticket's row lock.
    entries: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column()
    # The first public reply by support: time to first reply is first_response_at - created_at.
    first_response_at: Mapped[datetime | None] = mapped_column()
    resolved_at: Mapped[datetime | None] = mapped_column()


class TicketEntry(Base):
    """One line of a ticket's timeline: a message, an internal note, or something staff did (audited).

    Entries are only ever added. Messages are plain text, stored exactly as written.
    """

    __tablename__ = "ticket_entries"

    ticket_id: Mapped[str] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    # message | note (staff only) | status_changed | refund_requested | access_granted | payments_checked
    kind: Mapped[str] = mapped_column(String(24))
    author_id: Mapped[str | None] = mapped_column(String(32))
    author_role: Mapped[str] = mapped_column(String(16))  # buyer | support | system
    body: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column()


class FaqEntry(Base):
    """A question and its answer in one locale, edited by admins; the assistant retrieves from these."""

    __tablename__ = "faq_entries"
    __table_args__ = (Index("ix_faq_entries_locale_published", "locale", "published"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    locale: Mapped[str] = mapped_column(String(8))  # zh-CN | en
    # A stable name for entries the assistant looks up directly, such as `pay.alipay`.
    topic: Mapped[str | None] = mapped_column(String(40), index=True)
    question: Mapped[str] = mapped_column(String(300))
    answer: Mapped[str] = mapped_column(Text)
    # Extra words that should find this entry (synonyms, channel names), separated by spaces.
    keywords: Mapped[str] = mapped_column(String(500), default="")
    published: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column()
    updated_by: Mapped[str | None] = mapped_column(String(32))
