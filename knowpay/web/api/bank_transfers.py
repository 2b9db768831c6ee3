"""Admins record bank transfers that arrived; exact amounts capture, others are flagged."""

from __future__ import annotations

from flask_openapi3 import APIBlueprint
from pydantic import Field
from sqlalchemy import select

from knowpay.payments.bank_transfers import record_transfer
from knowpay.payments.models import BankTransferReceipt
from knowpay.representations import Out, UtcDateTime
from knowpay.web.api.schemas import BEARER, ListQuery, Page, Strict, errors, tag
from knowpay.web.auth import current_user, require_recent_second_factor
from knowpay.web.pagination import paginate
from knowpay.web.runtime import request_session, runtime
from knowpay.web.uow import api_call

bp = APIBlueprint("bank_transfers", __name__, url_prefix="/api/v1", abp_tags=tag("bank transfers"))


class TransferIn(Strict):
    reference: str = Field(..., min_length=4, max_length=40, description="the KP-XXXX-XXXX the buyer quoted")
    amount: int = Field(..., gt=0, le=10**13, description="minor units received")
    note: str | None = Field(None, max_length=300)


class ReceiptOut(Out):
    id: str
    reference: str
    amount: int
    currency: str
    payment_id: str | None
    outcome: str
    note: str | None
    recorded_by: str
    created_at: UtcDateTime


@bp.post("/bank-transfers", responses={201: ReceiptOut, **errors(400, 401, 403)}, security=BEARER)
@api_call
def record(body: TransferIn):
    """Record a received transfer: `captured` when it pays its payment exactly, else flagged
    (`partial`, `excess`, `unknown_reference`, `not_payable`) for a person to resolve."""
    admin = current_user("admin")
    require_recent_second_factor(admin)
    receipt = record_transfer(runtime(), admin=admin, reference=body.reference, amount=body.amount, note=body.note)
    return ReceiptOut.model_validate(receipt), 201


@bp.get("/bank-transfers", responses={200: Page[ReceiptOut], **errors(401, 403)}, security=BEARER)
@api_call
def list_receipts(query: ListQuery):
    current_user("admin")
    rows, more, cursor = paginate(request_session(), select(BankTransferReceipt), BankTransferReceipt,
                                  limit=query.limit, cursor=query.cursor)
    return {"data": [ReceiptOut.model_validate(r).model_dump(mode="json") for r in rows], "has_more": more,
            "next_cursor": cursor}, 200
