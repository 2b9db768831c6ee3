"""Demo data: creators, buyers and a published product of every kind. Safe to run twice."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from knowpay.accounts import service as accounts
from knowpay.accounts.models import User
from knowpay.catalog import service as catalog
from knowpay.catalog.models import Product
from knowpay.domain.clock import Clock
from knowpay.domain.states import ProductStatus

DEMO_PASSWORD = "demo-pass-2026"


@dataclass(frozen=True)
class DemoUser:
    email: str
    username: str
    roles: tuple[str, ...]


USERS = (
    DemoUser("admin@demo.knowpay", "admin", ("admin",)),
    DemoUser("support@demo.knowpay", "support", ("support",)),
    DemoUser("teacher.li@demo.knowpay", "teacher_li", ("creator",)),
    DemoUser("writer.chen@demo.knowpay", "writer_chen", ("creator",)),
    DemoUser("buyer.wang@demo.knowpay", "buyer_wang", ("buyer",)),
    DemoUser("buyer.zhao@demo.knowpay", "buyer_zhao", ("buyer",)),
)

# (creator username, kind, title, price in fen, extra)
PRODUCTS = (
    ("teacher_li", "course", "Python 数据分析实战课", 19900, {}),
    ("writer_chen", "ebook", "《极简理财》电子书", 2990, {}),
    ("writer_chen", "audio", "每日英语听力 (音频专栏)", 9900, {}),
    ("teacher_li", "video", "摄影入门视频课", 4900, {}),
    ("teacher_li", "membership", "李老师知识星球 月度会员", 3000, {"plan": {"interval": "month", "interval_count": 1}}),
    ("writer_chen", "consulting", "1 对 1 写作咨询 (60 分钟)", 50000, {"refund_window_days": 1}),
    ("teacher_li", "coin_pack", "100 知识币 (送 10)", 10000, {"coins": 10000, "bonus_coins": 1000}),
)


def seed_demo(session: Session, *, clock: Clock) -> list[str]:
    """Create whatever of the demo data is missing; returns lines describing what exists."""
    users: dict[str, User] = {}
    for demo in USERS:
        user = session.scalar(select(User).where(User.email == demo.email))
        if user is None:
            user = accounts.register_user(session, email=demo.email, password=DEMO_PASSWORD,
                                          username=demo.username, roles=demo.roles, clock=clock)
        users[demo.username] = user
    for username, kind, title, amount, extra in PRODUCTS:
        creator = users[username]
        product = session.scalar(select(Product).where(Product.title == title, Product.creator_id == creator.id))
        if product is None:
            product = catalog.create_product(session, creator=creator, title=title, kind=kind, amount=amount,
                                             currency="cny", description=f"演示商品：{title}", clock=clock,
                                             **extra)
            catalog.change_status(session, product, ProductStatus.PUBLISHED, clock=clock)
    from knowpay.support import faq

    faq.load_entries(session, faq.seed_entries(), clock=clock)
    return [f"  {d.email:<28} {DEMO_PASSWORD}  ({', '.join(d.roles)})" for d in USERS]
