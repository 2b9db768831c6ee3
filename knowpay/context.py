"""What a running KnowPay process holds, built once (create_app, worker, CLI) and passed on."""

from __future__ import annotations

from dataclasses import dataclass

from knowpay.channels import Registry, build_channels
from knowpay.config import Settings
from knowpay.db import Database
from knowpay.domain.clock import Clock, SystemClock


@dataclass
class Context:
    settings: Settings
    db: Database
    clock: Clock
    channels: Registry


def build_context(settings: Settings, *, db: Database | None = None, clock: Clock | None = None,
                  channels: Registry | None = None) -> Context:
    return Context(
        settings=settings,
        db=db or Database(settings.database_url),
        clock=clock or SystemClock(),
        channels=channels or Registry(build_channels(settings)),
    )
