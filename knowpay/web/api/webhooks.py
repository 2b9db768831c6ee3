"""Webhook endpoints (admins): register a URL for event types, see its deliveries, send one again."""

from __future__ import annotations

from typing import Literal

from flask import after_this_request
from flask_openapi3 import APIBlueprint
from pydantic import Field

from knowpay.jobs.tasks import enqueue_outbox_kick
from knowpay.outbox import webhooks
from knowpay.outbox.models import WebhookDelivery, WebhookEndpoint
from knowpay.web.api.schemas import BEARER, IdPath, ListQuery, Out, Page, Strict, UtcDateTime, errors, tag
from knowpay.web.auth import current_user
from knowpay.web.pagination import paginate
from knowpay.web.runtime import request_session, runtime
from knowpay.web.uow import api_call

bp = APIBlueprint("webhooks", __name__, url_prefix="/api/v1", abp_tags=tag("webhooks"))


class EndpointIn(Strict):
    url: str = Field(..., min_length=1, max_length=webhooks.MAX_URL_LENGTH,
                     description="where events are POSTed: an http:// or https:// URL")
    events: list[str] = Field(..., max_length=50, description='event types, e.g. ["order.paid"]')


class EndpointOut(Out):
    id: str
    url: str
    events: list[str]
    enabled: bool
    created_at: UtcDateTime


class CreatedEndpointOut(EndpointOut):
    secret: str = Field(..., description="signs `KnowPay-Signature`; shown only in this response")


class DeliveryOut(Out):
    id: str
    endpoint_id: str
    event_id: str
    event_type: str | None = None
    status: str
    attempts: int
    next_attempt_at: UtcDateTime | None
    last_status: int | None
    last_error: str | None
    created_at: UtcDateTime
    delivered_at: UtcDateTime | None


class DeliveryQuery(ListQuery):
    status: Literal["pending", "succeeded", "failed"] | None = None


def delivery_out(delivery: WebhookDelivery, event_type: str | None) -> DeliveryOut:
    out = DeliveryOut.model_validate(delivery)
    out.event_type = event_type
    if delivery.status != webhooks.DeliveryStatus.PENDING:
        out.next_attempt_at = None
    return out


def _kick_after_commit() -> None:
    settings = runtime().settings

    @after_this_request
    def _kick(response):
        enqueue_outbox_kick(settings)
        return response


@bp.post("/webhook-endpoints", responses={201: CreatedEndpointOut, **errors(400, 401, 403)}, security=BEARER)
@api_call
def create_webhook_endpoint(body: EndpointIn):
    """Register an endpoint; the response carries its signing secret, which is never shown again."""
    admin = current_user("admin")
    endpoint = webhooks.create_endpoint(request_session(), body.url, body.events, actor_id=admin.id,
                                        clock=runtime().clock)
    return CreatedEndpointOut.model_validate(endpoint), 201


@bp.get("/webhook-endpoints", responses={200: Page[EndpointOut], **errors(400, 401, 403)}, security=BEARER)
@api_call
def list_webhook_endpoints(query: ListQuery):
    """Every endpoint, newest first, without secrets."""
    current_user("admin")
    rows, more, cursor = paginate(request_session(), webhooks.endpoints_query(), WebhookEndpoint,
                                  limit=query.limit, cursor=query.cursor)
    return {"data": [EndpointOut.model_validate(e).model_dump(mode="json") for e in rows], "has_more": more,
            "next_cursor": cursor}, 200


@bp.get("/webhook-endpoints/<id>/deliveries",
        responses={200: Page[DeliveryOut], **errors(400, 401, 403, 404)}, security=BEARER)
@api_call
def list_webhook_deliveries(path: IdPath, query: DeliveryQuery):
    """An endpoint's deliveries, newest first; `?status=failed` finds the ones to send again."""
    current_user("admin")
    session = request_session()
    endpoint = webhooks.get_endpoint(session, path.id)
    rows, more, cursor = paginate(session, webhooks.deliveries_query(endpoint.id, status=query.status),
                                  WebhookDelivery, limit=query.limit, cursor=query.cursor)
    types = webhooks.event_types(session, [d.event_id for d in rows])
    return {"data": [delivery_out(d, types.get(d.event_id)).model_dump(mode="json") for d in rows],
            "has_more": more, "next_cursor": cursor}, 200


@bp.post("/webhook-deliveries/<id>/redeliver",
         responses={200: DeliveryOut, **errors(400, 401, 403, 404, 409)}, security=BEARER)
@api_call
def redeliver_webhook(path: IdPath):
    """Put a delivery back in the queue, due now, whatever its status (a failed one gets one more attempt)."""
    current_user("admin")
    session = request_session()
    delivery = webhooks.redeliver_delivery(session, path.id, clock=runtime().clock)
    _kick_after_commit()
    event_type = webhooks.event_types(session, [delivery.event_id]).get(delivery.event_id)
    return delivery_out(delivery, event_type), 200
