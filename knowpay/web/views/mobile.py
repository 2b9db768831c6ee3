"""Buyers on phones: tell a phone (and WeChat's built-in browser) from its User-Agent, and choose the
channel method that pays on the phone itself (the app, or WeChat Pay inside WeChat) instead of a QR code
it cannot scan."""

from __future__ import annotations

import re

from knowpay.analytics.source import device_class_of

# WeCom (企业微信) says MicroMessenger too, and treats payment pages the same way.
_WECHAT = re.compile(r"MicroMessenger", re.IGNORECASE)


def is_phone(user_agent: str | None) -> bool:
    """A phone or tablet browser, as analytics classes devices. (iPadOS Safari calls itself a Mac and is not
    caught: it gets the QR code, whose "open on this device" link still works there.)"""
    return device_class_of(user_agent) in ("mobile", "tablet")


def in_wechat(user_agent: str | None) -> bool:
    """WeChat's built-in browser."""
    return bool(user_agent and _WECHAT.search(user_agent))


def phone_method(channel: str, user_agent: str | None, *, wechat_openid: str | None = None) -> str | None:
    """The method for `channel` on this browser; None keeps the channel's default (a QR code).

    On a phone Alipay takes the wap flow (手机网站支付) and WeChat Pay the H5 flow, both a redirect that
    opens the app. Inside WeChat, H5 is refused by WeChat Pay and Alipay pages are blocked: WeChat Pay is
    paid on the page itself (JSAPI) once the buyer's openid is known, and by the QR code page until then.
    """
    if in_wechat(user_agent):
        return "jsapi" if channel == "wechat" and wechat_openid else None
    if not is_phone(user_agent):
        return None
    return {"alipay": "wap", "wechat": "h5"}.get(channel)
