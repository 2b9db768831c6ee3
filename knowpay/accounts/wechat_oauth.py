"""WeChat's web authorisation (网页授权) for an official account, scope `snsapi_base`: the silent redirect
that gives a code, and the server-side exchange of that code for the buyer's openid. No HTTP server here:
the pages (`knowpay.web.views.wechat_oauth`) keep the state and call these."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import requests

from knowpay.channels.http import DEFAULT_TIMEOUT
from knowpay.config import ConfigError, Settings

# WeChat's own hosts: the authorisation page on open.weixin.qq.com, the code exchange on api.weixin.qq.com.
# KNOWPAY_WECHAT_OAUTH_BASE replaces both with one base URL (the sandbox serves both paths).
AUTHORIZE_BASE = "https://open.weixin.qq.com"
API_BASE = "https://api.weixin.qq.com"
AUTHORIZE_PATH = "/connect/oauth2/authorize"
TOKEN_PATH = "/sns/oauth2/access_token"
SCOPE = "snsapi_base"  # silent: no consent page, the openid only
MAX_STATE_LENGTH = 128  # WeChat takes a-zA-Z0-9, at most 128 bytes


class AuthorisationFailed(Exception):
    """WeChat did not give an openid for this code (refused, unreachable, or an answer we cannot read)."""

    def __init__(self, message: str, *, errcode: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errcode = errcode


@dataclass(frozen=True)
class OAuthConfig:
    """KNOWPAY_WECHAT_APP_ID and KNOWPAY_WECHAT_APP_SECRET (the official account's AppSecret), and where
    WeChat's authorisation lives (KNOWPAY_WECHAT_OAUTH_BASE, unset for WeChat itself)."""

    app_id: str
    app_secret: str
    authorize_base: str = AUTHORIZE_BASE
    api_base: str = API_BASE

    @classmethod
    def from_settings(cls, settings: Settings) -> OAuthConfig | None:
        """None when the app id or secret is unset (buyers inside WeChat then pay by QR code)."""
        env = settings.channel
        app_id = (env.get("wechat_app_id") or "").strip()
        secret = (env.get("wechat_app_secret") or "").strip()
        if not app_id or not secret:
            return None
        base = (env.get("wechat_oauth_base") or "").strip().rstrip("/")
        if not base:
            return cls(app_id, secret)
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
            raise ConfigError("KNOWPAY_WECHAT_OAUTH_BASE must be a base URL like http://127.0.0.1:8100")
        if settings.is_production and parts.scheme != "https":
            raise ConfigError("KNOWPAY_WECHAT_OAUTH_BASE must be https in production")
        return cls(app_id, secret, authorize_base=base, api_base=base)

    def authorize_url(self, *, redirect_uri: str, state: str) -> str:
        """Where to send the buyer's browser; WeChat comes back to `redirect_uri?code=...&state=...`."""
        if not (state.isascii() and state.isalnum() and 0 < len(state) <= MAX_STATE_LENGTH):
            raise ValueError("state must be 1-128 letters and digits")
        query = urlencode({"appid": self.app_id, "redirect_uri": redirect_uri, "response_type": "code",
                           "scope": SCOPE, "state": state})
        # WeChat's client needs the #wechat_redirect fragment, whether the link is opened or redirected to.
        return f"{self.authorize_base}{AUTHORIZE_PATH}?{query}#wechat_redirect"


# (url, query) → (HTTP status, body); raises requests.RequestException when nothing comes back.
Fetch = Callable[[str, Mapping[str, str]], tuple[int, bytes]]


def requests_fetch(api_base: str, *, timeout: tuple[float, float] = DEFAULT_TIMEOUT) -> Fetch:
    """A pooled `requests` GET with timeouts; no environment proxy for a gateway on this machine."""
    http = requests.Session()
    host = urlsplit(api_base).hostname or ""
    try:
        http.trust_env = not (host == "localhost" or ipaddress.ip_address(host).is_loopback)
    except ValueError:
        http.trust_env = True

    def fetch(url: str, query: Mapping[str, str]) -> tuple[int, bytes]:
        response = http.get(url, params=dict(query), timeout=timeout, allow_redirects=False)
        return response.status_code, response.content

    return fetch


def exchange_code(config: OAuthConfig, code: str, fetch: Fetch) -> str:
    """The openid WeChat gives for this authorisation code (single use, valid five minutes)."""
    if not code or len(code) > 512:
        raise AuthorisationFailed("no usable authorisation code came back")
    query = {"appid": config.app_id, "secret": config.app_secret, "code": code,
             "grant_type": "authorization_code"}
    try:
        status, body = fetch(config.api_base + TOKEN_PATH, query)
    except requests.RequestException as exc:
        raise AuthorisationFailed(f"WeChat could not be reached ({exc.__class__.__name__})") from None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        raise AuthorisationFailed(f"WeChat answered HTTP {status} with something other than a JSON object")
    # WeChat answers refusals with HTTP 200 and {"errcode": 40029, "errmsg": "invalid code"}.
    errcode = data.get("errcode")
    if errcode:
        raise AuthorisationFailed(f"WeChat refused the code: {str(data.get('errmsg'))[:200]} ({errcode})",
                                  errcode=errcode if isinstance(errcode, int) else None)
    openid = data.get("openid")
    if status != 200 or not isinstance(openid, str) or not openid or len(openid) > 128:
        raise AuthorisationFailed(f"WeChat answered HTTP {status} without an openid")
    return openid
