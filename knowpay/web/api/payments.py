"""Payments: create one for an order, read it, and follow its status live (Server-Sent Events)."""

from __future__ import annotations

import json
import time
from typing import Literal

from flask import Response, request
from flask_openapi3 import APIBlueprint
from pydantic import Field

from knowpay.domain.states import PaymentStatus, is_final
from knowpay.payments import service as payments
from knowpay.payments.models import Payment
from knowpay.representations import PaymentOut, as_json
from knowpay.web.api.schemas import BEARER, IdPath, Strict, errors, tag
from knowpay.web.auth import current_user
from knowpay.web.runtime import request_session, runtime
from knowpay.web.uow import api_call

bp = APIBlueprint("payments", __name__, url_prefix="/api/v1", abp_tags=tag("payments"))

STREAM_POLL_SECONDS = 0.5
STREAM_KEEPALIVE_SECONDS = 15
STREAM_MAX_SECONDS = 30 * 60


class PaymentIn(Strict):
    channel: Literal["alipay", "wechat", "stripe", "wallet", "bank_transfer", "sandbox"]
    method: Literal["qr", "page", "wap", "native", "jsapi", "h5", "checkout"] | None = None
    installments: Literal[3, 6, 12] | None = None
    openid: str | None = Field(None, max_length=128)
    device_id: str | None = Field(None, max_length=128)
    otp: str | None = Field(None, max_length=16)


class PaymentList(Strict):
    data: list[PaymentOut]


@bp.post("/orders/<id>/payments", responses={201: PaymentOut, **errors(400, 401, 402, 403, 404, 409, 503)},
         security=BEARER)
@api_call
def create_payment(path: IdPath, body: PaymentIn):
    """Pay a pending order through a channel; the answer carries the buyer's next `action`."""
    ask = payments.PaymentAsk(channel=body.channel, method=body.method, installments=body.installments, otp=body.otp,
                              openid=body.openid, device_id=body.device_id,
                              client_ip=request.headers.get("X-Forwarded-For", request.remote_addr or "")
                              .split(",")[0].strip() or None)
    payment = payments.create_payment(runtime(), buyer=current_user(), order_id=path.id, ask=ask)
    return PaymentOut.model_validate(payment), 201


@bp.get("/orders/<id>/payments", responses={200: PaymentList, **errors(401, 404)}, security=BEARER)
@api_call
def list_order_payments(path: IdPath):
    """Every payment attempt of one of the caller's orders."""
    from knowpay.orders.service import get_order_for

    session = request_session()
    order = get_order_for(session, path.id, current_user())
    return {"data": [as_json(PaymentOut, p) for p in payments.payments_of_order(session, order.id)]}, 200


@bp.get("/payments/<id>", responses={200: PaymentOut, **errors(401, 404)}, security=BEARER)
@api_call
def get_payment(path: IdPath):
    """One of the caller's payments."""
    return PaymentOut.model_validate(payments.get_payment_for(request_session(), path.id, current_user())), 200


@bp.get("/payments/<id>/stream", responses={200: {"description": "text/event-stream of `status` events"},
                                             **errors(401, 404)}, security=BEARER)
def stream_payment(path: IdPath):
    """Server-Sent Events: a `status` event carrying the payment whenever it changes (its status, or its
    next `action`, as when a payment held for review is approved and sent to its channel), closing
    after a final status.

    It reads the database, not process memory, so any web node can serve it; under the gevent
    worker an open stream costs a greenlet, not a thread.
    """
    rt = runtime()
    with rt.db.transaction(write=False) as session:
        payment_id = payments.get_payment_for(session, path.id, current_user()).id

    def events():
        last = None
        started = last_sent = time.monotonic()
        yield "retry: 2000\n\n"
        while time.monotonic() - started < STREAM_MAX_SECONDS:
            with rt.db.transaction(write=False) as session:
                payment = session.get(Payment, payment_id)
                version, body = payment.version, as_json(PaymentOut, payment)
            # Every change bumps the version; the body too, for a change made without one.
            if (version, body) != last:
                last = (version, body)
                yield f"id: {version}\nevent: status\ndata: {json.dumps(body, ensure_ascii=False)}\n\n"
                last_sent = time.monotonic()
                if is_final(PaymentStatus(body["status"])):
                    return
            elif time.monotonic() - last_sent > STREAM_KEEPALIVE_SECONDS:
                yield ": keep-alive\n\n"
                last_sent = time.monotonic()
            time.sleep(STREAM_POLL_SECONDS)

    return Response(events(), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
