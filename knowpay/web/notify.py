"""Channel notifications at /notify/<channel>: answered exactly as each channel expects."""

from __future__ import annotations

from flask import Blueprint, Response, abort, request

from knowpay.payments.notifications import receive_notification
from knowpay.web.runtime import runtime

bp = Blueprint("notify", __name__, url_prefix="/notify")


@bp.post("/<channel_name>")
def notify(channel_name: str):
    rt = runtime()
    if channel_name not in rt.channels:
        abort(404)
    channel = rt.channels.get(channel_name)
    ack = receive_notification(rt, channel, dict(request.headers), request.get_data(cache=False))
    return Response(ack.body, status=ack.status, content_type=ack.content_type)
