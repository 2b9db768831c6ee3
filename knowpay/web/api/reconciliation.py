"""Admins: reconciliation runs, their items, and a CSV export of a run."""

from __future__ import annotations

import csv
import io
from typing import Literal

from flask import Response
from flask_openapi3 import APIBlueprint
from pydantic import BaseModel
from sqlalchemy import select

from knowpay.domain.errors import NotFound
from knowpay.reconciliation.models import ReconciliationItem, ReconciliationRun
from knowpay.representations import Out, UtcDateTime
from knowpay.web.api.schemas import BEARER, IdPath, ListQuery, Page, errors, tag
from knowpay.web.auth import current_user
from knowpay.web.pagination import paginate
from knowpay.web.runtime import request_session
from knowpay.web.uow import api_call

bp = APIBlueprint("reconciliation", __name__, url_prefix="/api/v1", abp_tags=tag("reconciliation"))

ITEM_FIELDS = ("kind", "result", "payment_id", "refund_id", "channel_trade_no", "channel_amount", "our_amount",
               "currency", "detail")


class RunOut(Out):
    id: str
    channel: str
    day: str
    status: str
    source: str
    counts: dict
    error: str | None
    runs: int
    started_at: UtcDateTime
    finished_at: UtcDateTime | None

    @classmethod
    def of(cls, run: ReconciliationRun) -> RunOut:
        return cls.model_validate({**{k: getattr(run, k) for k in cls.model_fields if k != "day"},
                                   "day": run.day.isoformat()})


class ItemOut(Out):
    kind: str
    result: str
    payment_id: str | None
    refund_id: str | None
    channel_trade_no: str | None
    channel_amount: int | None
    our_amount: int | None
    currency: str | None
    detail: str | None


class ItemsQuery(BaseModel):
    result: Literal["matched", "missing_internal", "missing_channel", "amount_mismatch", "status_mismatch"] | None = None
    format: Literal["json", "csv"] = "json"


class ItemList(BaseModel):
    data: list[ItemOut]


@bp.get("/reconciliation/runs", responses={200: Page[RunOut], **errors(401, 403)}, security=BEARER)
@api_call
def list_runs(query: ListQuery):
    """Reconciliation runs, newest first."""
    current_user("admin")
    rows, more, cursor = paginate(request_session(), select(ReconciliationRun), ReconciliationRun,
                                  limit=query.limit, cursor=query.cursor)
    return {"data": [RunOut.of(r).model_dump(mode="json") for r in rows], "has_more": more,
            "next_cursor": cursor}, 200


@bp.get("/reconciliation/runs/<id>", responses={200: RunOut, **errors(401, 403, 404)}, security=BEARER)
@api_call
def get_run(path: IdPath):
    current_user("admin")
    run = request_session().get(ReconciliationRun, path.id)
    if run is None:
        raise NotFound("No such reconciliation run.", param="id")
    return RunOut.of(run), 200


@bp.get("/reconciliation/runs/<id>/items", responses={200: ItemList, **errors(401, 403, 404)}, security=BEARER)
def run_items(path: IdPath, query: ItemsQuery):
    """The run's lines; `?result=` filters, `?format=csv` downloads them."""
    current_user("admin")
    session = request_session()
    if session.get(ReconciliationRun, path.id) is None:
        raise NotFound("No such reconciliation run.", param="id")
    stmt = select(ReconciliationItem).where(ReconciliationItem.run_id == path.id).order_by(ReconciliationItem.id)
    if query.result:
        stmt = stmt.where(ReconciliationItem.result == query.result)
    items = list(session.scalars(stmt))
    if query.format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(ITEM_FIELDS)
        for item in items:
            writer.writerow([getattr(item, f) if getattr(item, f) is not None else "" for f in ITEM_FIELDS])
        return Response(buffer.getvalue(), mimetype="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="reconciliation-{path.id}.csv"'})
    return {"data": [ItemOut.model_validate(i).model_dump(mode="json") for i in items]}
