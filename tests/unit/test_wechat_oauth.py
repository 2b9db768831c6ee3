"""WeChat's web authorisation, without a network: the state bound to the browser session and taken once, the
authorisation link, the code exchange read from WeChat's answers, and the settings that switch it on."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from knowpay.accounts.wechat_oauth import AuthorisationFailed, OAuthConfig, exchange_code
from knowpay.config import ConfigError, Settings, load_settings
from knowpay.web.views.wechat_oauth import PENDING_KEY, STATE_TTL_SECONDS, begin, take
from tests.unit.test_security_config import GOOD as PRODUCTION

APP_ID = "wxd678efh567hg6787"
SECRET = "0123456789abcdef0123456789abcdef"
NOW = 1_764_000_000.0


@dataclass
class FakeWeChatApi:
    """api.weixin.qq.com played by the test: records each GET and answers from a script."""

    answers: list[tuple[int, bytes] | Exception] = field(default_factory=list)
    calls: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def __call__(self, url: str, query) -> tuple[int, bytes]:
        self.calls.append((url, dict(query)))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _config(**extra: str) -> OAuthConfig | None:
    env = {"wechat_app_id": APP_ID, "wechat_app_secret": SECRET, **extra}
    return OAuthConfig.from_settings(Settings(instance_path=Path("/tmp"), channel=env))


# -- the state -----------------------------------------------------------------------------------------------

def test_the_state_sent_to_wechat_brings_the_buyer_back_to_the_page_once():
    session: dict = {}
    state = begin(session, "/checkout/products/prd_1", now=NOW)
    assert state.isalnum() and len(state) == 32  # WeChat takes letters and digits, at most 128
    assert take(session, state, now=NOW + 5) == "/checkout/products/prd_1"
    assert take(session, state, now=NOW + 6) is None  # the same answer again is refused
    assert PENDING_KEY not in session


def test_each_authorisation_gets_an_unguessable_state_of_its_own():
    assert len({begin({}, "/", now=NOW) for _ in range(50)}) == 50


def test_a_wrong_state_is_refused_and_leaves_the_pending_one_alone():
    session: dict = {}
    state = begin(session, "/checkout/orders/ord_1", now=NOW)
    for wrong in ("", None, state[:-1], state[:-1] + ("1" if state[-1] == "0" else "0"), "被篡改"):
        assert take(session, wrong, now=NOW + 1) is None
    assert take(session, state, now=NOW + 2) == "/checkout/orders/ord_1"


def test_a_state_with_nothing_pending_in_this_session_is_refused():
    other_browser: dict = {}
    state = begin(other_browser, "/", now=NOW)
    assert take({}, state, now=NOW) is None


def test_a_state_coming_back_too_late_is_refused_and_forgotten():
    session: dict = {}
    state = begin(session, "/checkout/products/prd_1", now=NOW)
    assert take(session, state, now=NOW + STATE_TTL_SECONDS + 1) is None
    assert take(session, state, now=NOW + 1) is None


def test_the_way_back_is_always_a_path_on_this_site():
    session: dict = {}
    state = begin(session, "//evil.example/steal", now=NOW)
    assert take(session, state, now=NOW) == "/"


# -- settings and the link -----------------------------------------------------------------------------------

@pytest.mark.parametrize("missing", ["wechat_app_id", "wechat_app_secret"])
def test_without_the_app_id_or_secret_there_is_no_authorisation_and_buyers_keep_the_qr_code(missing):
    assert _config(**{missing: ""}) is None


def test_the_authorisation_link_is_wechats_silent_snsapi_base_one():
    config = _config()
    url = config.authorize_url(redirect_uri="https://pay.example.com/checkout/wechat/authorised?x=1",
                               state="abc123")
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "open.weixin.qq.com", "/connect/oauth2/authorize")
    assert parts.fragment == "wechat_redirect"
    assert {k: v[0] for k, v in parse_qs(parts.query).items()} == {
        "appid": APP_ID, "redirect_uri": "https://pay.example.com/checkout/wechat/authorised?x=1",
        "response_type": "code", "scope": "snsapi_base", "state": "abc123"}
    assert list(parse_qs(parts.query)) == ["appid", "redirect_uri", "response_type", "scope", "state"]
    assert config.api_base == "https://api.weixin.qq.com"


@pytest.mark.parametrize("state", ["", "a-b", "a" * 129, "状态"])
def test_a_state_wechat_would_not_carry_is_never_sent(state):
    with pytest.raises(ValueError):
        _config().authorize_url(redirect_uri="https://pay.example.com/cb", state=state)


def test_the_oauth_base_stands_in_for_both_of_wechats_hosts():
    config = _config(wechat_oauth_base="http://127.0.0.1:8100/")
    assert config.authorize_url(redirect_uri="http://x/cb", state="s").startswith(
        "http://127.0.0.1:8100/connect/oauth2/authorize?")
    assert config.api_base == "http://127.0.0.1:8100"


@pytest.mark.parametrize("base", ["ftp://127.0.0.1", "http://127.0.0.1:8100/path", "127.0.0.1:8100"])
def test_an_unusable_oauth_base_is_refused_at_start_up(base):
    with pytest.raises(ConfigError, match="KNOWPAY_WECHAT_OAUTH_BASE"):
        _config(wechat_oauth_base=base)


def test_production_refuses_the_sandbox_as_wechats_authorisation():
    with pytest.raises(ConfigError, match="KNOWPAY_WECHAT_OAUTH_BASE"):
        load_settings({**PRODUCTION, "KNOWPAY_WECHAT_OAUTH_BASE": "http://127.0.0.1:8100"})


def test_production_talks_to_wechat_over_https_only():
    env = {"wechat_app_id": APP_ID, "wechat_app_secret": SECRET, "wechat_oauth_base": "http://oauth.example"}
    with pytest.raises(ConfigError, match="https"):
        OAuthConfig.from_settings(Settings(env="production", channel=env))


# -- the code exchange ---------------------------------------------------------------------------------------

def test_a_code_is_exchanged_for_the_openid_with_the_apps_secret():
    api = FakeWeChatApi([(200, json.dumps({"access_token": "ACCESS", "expires_in": 7200, "refresh_token": "R",
                                           "openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
                                           "scope": "snsapi_base"}).encode())])
    assert exchange_code(_config(), "CODE123", api) == "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
    assert api.calls == [("https://api.weixin.qq.com/sns/oauth2/access_token",
                          {"appid": APP_ID, "secret": SECRET, "code": "CODE123",
                           "grant_type": "authorization_code"})]


@pytest.mark.parametrize(("errcode", "errmsg"), [(40163, "code been used"), (40029, "invalid code"),
                                                 (40125, "invalid appsecret")])
def test_a_used_invalid_or_misconfigured_code_gives_no_openid(errcode, errmsg):
    # WeChat refuses with HTTP 200 and errcode/errmsg.
    api = FakeWeChatApi([(200, json.dumps({"errcode": errcode, "errmsg": errmsg}).encode())])
    with pytest.raises(AuthorisationFailed) as refused:
        exchange_code(_config(), "CODE123", api)
    assert refused.value.errcode == errcode and errmsg in refused.value.message


@pytest.mark.parametrize("answer", [(200, b"<html>busy</html>"), (200, b"[]"), (502, b"{}"),
                                    (200, json.dumps({"openid": ""}).encode()),
                                    requests.ConnectTimeout("no route")])
def test_no_usable_answer_gives_no_openid(answer):
    with pytest.raises(AuthorisationFailed):
        exchange_code(_config(), "CODE123", FakeWeChatApi([answer]))


def test_a_missing_code_is_not_even_sent():
    api = FakeWeChatApi()
    with pytest.raises(AuthorisationFailed):
        exchange_code(_config(), "", api)
    assert api.calls == []
