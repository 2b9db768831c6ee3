"""Channel notifications at /notify/<channel>: answered exactly as each channel expects."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, abort, request

from knowpay.payments.notifications import receive_notification
from knowpay.web.runtime import runtime

log = logging.getLogger(__name__)
bp = Blueprint("notify", __name__, url_prefix="/notify")


@bp.post("/<channel_name>")
def notify(channel_name: str):
    rt = runtime()
    if channel_name not in rt.channels:
        abort(404)
    channel = rt.channels.get(channel_name)
    try:
        ack = receive_notification(rt, channel, dict(request.headers), request.get_data(cache=False))
    except Exception:  # the database is down, say: answer in the channel's own words so it retries later
        log.exception("could not process a %s notification; the channel will retry", channel_name)
        refusal = channel.acknowledge(False, "temporarily unavailable, retry later")
        status = max(refusal.status, 503) if refusal.status >= 400 else refusal.status
        return Response(refusal.body, status=status, content_type=refusal.content_type)
    return Response(ack.body, status=ack.status, content_type=ack.content_type)
