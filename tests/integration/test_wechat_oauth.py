"""Paying inside WeChat's browser, end to end: KnowPay's checkout pages (MicroMessenger User-Agent) send the buyer
through the sandbox's imitation of WeChat's silent web authorisation, keep the openid encrypted, pay WeChat Pay
with JSAPI, and the sandbox's stand-in for the WeChat app confirms with the parameters the page was given.
Whatever fails on the way leaves the buyer on the QR code, as before."""

from __future__ import annotations

import html
import json
import re
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import select

from knowpay.accounts.models import WeChatIdentity
from knowpay.accounts.wechat_identity import openid_for
from knowpay.accounts.wechat_oauth import AuthorisationFailed, OAuthConfig, exchange_code, requests_fetch
from knowpay.channels import Registry
from knowpay.domain.clock import SystemClock
from knowpay.fieldcrypt import FieldCipher
from knowpay.payments.models import Payment
from knowpay.sandbox.gateways.wechat import WECHAT_USER_COOKIE, _sandbox_openid
from knowpay.security.keys import rotate_field_keys
from tests.conftest import FAST_PASSWORDS
from tests.e2e.browser.forms import post_form, sign_in
from tests.integration.test_wechat_sandbox import wechat, wechat_env  # noqa: F401 - fixtures
from tests.unit.test_mobile_checkout import DESKTOP, WECHAT

AUTHORISED = "/checkout/wechat/authorised"
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)


def _knowpay(settings, db, wechat, **channel_settings):  # noqa: F811 - the fixture, passed on
    from knowpay.web import create_app

    env = wechat.env
    oauth = {"wechat_app_id": env["KNOWPAY_WECHAT_APP_ID"], "wechat_app_secret": env["KNOWPAY_WECHAT_APP_SECRET"],
             "wechat_oauth_base": wechat.url, **channel_settings}
    return create_app(settings.with_overrides(channel={**settings.channel, **oauth}), db=db, clock=SystemClock(),
                      config={"TESTING": True, **FAST_PASSWORDS}, channels=Registry({"wechat": wechat.channel}))


@pytest.fixture
def app(settings, db, wechat):  # noqa: F811
    """KnowPay with WeChat Pay and WeChat's web authorisation, both played by the sandbox."""
    return _knowpay(settings, db, wechat)


@pytest.fixture
def in_wechat(app, buyer):
    """The buyer signed in inside WeChat's browser."""
    client = app.test_client()
    client.environ_base["HTTP_USER_AGENT"] = WECHAT
    sign_in(client, buyer.email)
    return client


class WeChatUser:
    """The buyer's WeChat, as the sandbox knows it: its cookie jar at the sandbox, hence one openid."""

    def __init__(self) -> None:
        self.browser = requests.Session()
        self.browser.trust_env = False

    def open(self, authorize_url: str) -> str:
        """Follow KnowPay's link to WeChat's authorisation → where WeChat sends the browser back."""
        answer = self.browser.get(authorize_url.split("#")[0], allow_redirects=False, timeout=5)
        assert answer.status_code == 302, answer.text[:300]
        return answer.headers["Location"]

    def openid(self, app_id: str) -> str:
        return _sandbox_openid(app_id, self.browser.cookies[WECHAT_USER_COOKIE])


def _local(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _authorise(client, product_id: str, wechat_user: WeChatUser) -> str:
    """Open the checkout inside WeChat: → WeChat's silent authorisation → back to the checkout page."""
    asked = client.get(f"/checkout/products/{product_id}")
    assert asked.status_code == 302, asked.get_data(as_text=True)[:300]
    back = client.get(_local(wechat_user.open(asked.headers["Location"])))
    assert back.status_code == 303
    return back.headers["Location"]


def _stored(ctx, user_id: str) -> list[WeChatIdentity]:
    with ctx.db.transaction(write=False) as session:
        return list(session.scalars(select(WeChatIdentity).where(WeChatIdentity.user_id == user_id)))


def _pay_with_wechat(client, product_id: str) -> tuple[str, str]:
    answer = post_form(client, f"/checkout/products/{product_id}", {"channel": "wechat"})
    assert answer.status_code == 303, answer.get_data(as_text=True)[:500]
    location = answer.headers["Location"]
    found = re.search(r"/checkout/payments/(pay_\w+)", location)
    assert found, location
    return found.group(1), location


def test_the_sandbox_gives_each_code_once_for_the_secret_and_one_openid_per_wechat_user(wechat):  # noqa: F811
    app_id = wechat.env["KNOWPAY_WECHAT_APP_ID"]
    config = OAuthConfig(app_id, wechat.env["KNOWPAY_WECHAT_APP_SECRET"], authorize_base=wechat.url,
                         api_base=wechat.url)
    fetch = requests_fetch(wechat.url)
    user = WeChatUser()

    def code_for(someone: WeChatUser, state: str = "s1") -> str:
        back = urlsplit(someone.open(config.authorize_url(redirect_uri="http://127.0.0.1:8000/cb?x=1",
                                                          state=state)))
        assert back.path == "/cb" and parse_qs(back.query)["state"] == [state] and parse_qs(back.query)["x"]
        return parse_qs(back.query)["code"][0]

    code = code_for(user)
    with pytest.raises(AuthorisationFailed) as wrong_secret:
        exchange_code(OAuthConfig(app_id, "0" * 32, api_base=wechat.url), code, fetch)
    assert wrong_secret.value.errcode == 40125
    assert exchange_code(config, code, fetch) == user.openid(app_id)  # the refusal did not use it up
    with pytest.raises(AuthorisationFailed) as used:
        exchange_code(config, code, fetch)
    assert used.value.errcode == 40163
    with pytest.raises(AuthorisationFailed) as unknown:
        exchange_code(config, "a-code-nobody-was-given", fetch)
    assert unknown.value.errcode == 40029
    assert exchange_code(config, code_for(user, "s2"), fetch) == user.openid(app_id)  # the same WeChat user
    assert exchange_code(config, code_for(WeChatUser()), fetch) != user.openid(app_id)

    others = OAuthConfig("wx0000000000000000", "x", authorize_base=wechat.url)
    page = requests.get(others.authorize_url(redirect_uri="http://127.0.0.1:8000/cb", state="s"),
                        allow_redirects=False, timeout=5)
    assert page.status_code == 400 and "Location" not in page.headers  # never back to a doubtful app


def test_inside_wechat_the_checkout_learns_the_openid_silently_and_pays_with_jsapi(
        app, ctx, client, in_wechat, buyer, published_product, wechat):  # noqa: F811
    product_id = published_product["id"]
    asked = in_wechat.get(f"/checkout/products/{product_id}")
    assert asked.status_code == 302
    link = urlsplit(asked.headers["Location"])
    query = {k: v[0] for k, v in parse_qs(link.query).items()}
    assert f"{link.scheme}://{link.netloc}{link.path}" == f"{wechat.url}/connect/oauth2/authorize"
    assert link.fragment == "wechat_redirect"
    assert query["appid"] == wechat.env["KNOWPAY_WECHAT_APP_ID"] and query["scope"] == "snsapi_base"
    assert query["redirect_uri"] == ctx.settings.base_url + AUTHORISED
    assert re.fullmatch(r"[0-9a-f]{32}", query["state"])

    wechat_user = WeChatUser()
    coming_back = urlsplit(wechat_user.open(asked.headers["Location"]))
    assert coming_back.path == AUTHORISED and parse_qs(coming_back.query)["state"] == [query["state"]]
    back = in_wechat.get(_local(coming_back.geturl()))
    assert (back.status_code, back.headers["Location"]) == (303, f"/checkout/products/{product_id}")

    # Kept encrypted at rest, bound to the buyer and the app id.
    openid = wechat_user.openid(query["appid"])
    [row] = _stored(ctx, buyer.id)
    assert row.app_id == query["appid"] and row.openid_encrypted.startswith("kpe1:")
    assert openid not in row.openid_encrypted
    with ctx.db.transaction(write=False) as session:
        assert openid_for(session, FieldCipher(ctx.settings.encryption_keys), user_id=buyer.id,
                          app_id=query["appid"]) == openid

    page = in_wechat.get(f"/checkout/products/{product_id}")  # known now: nothing more to ask
    assert page.status_code == 200
    assert "在微信内直接支付" in page.get_data(as_text=True)  # the WeChat Pay choice says it pays right here

    payment_id, location = _pay_with_wechat(in_wechat, product_id)
    assert location.endswith("?open=1")
    with ctx.db.transaction(write=False) as session:
        payment = session.get(Payment, payment_id)
        assert (payment.method, payment.action["type"]) == ("jsapi", "jsapi")
    assert json.loads(wechat.trade(payment_id).extra)["openid"] == openid

    page = in_wechat.get(location).get_data(as_text=True)
    assert "wechat-pay.js" in page and "data-jsapi-fallback" in page and not INLINE_SCRIPT.search(page)
    params = json.loads(html.unescape(re.search(r'data-jsapi-params="([^"]+)"', page).group(1)))
    assert params == payment.action["params"] and params["package"].startswith("prepay_id=")

    # The buyer confirms in WeChat's cashier; WeChat Pay calls KnowPay back; the page shows success.
    assert wechat.confirm_jsapi(params, openid=openid).json()["err_msg"] == "get_brand_wcpay_request:ok"
    [(headers, body)] = wechat.callbacks(payment_id)
    assert client.post("/notify/wechat", data=body, headers=headers).status_code == 204
    panel = in_wechat.get(f"/checkout/payments/{payment_id}/panel").get_data(as_text=True)
    assert 'data-status="succeeded"' in panel


def test_an_answer_with_a_state_this_session_did_not_send_stores_nothing(in_wechat, ctx, buyer,
                                                                         published_product, wechat):  # noqa: F811
    asked = in_wechat.get(f"/checkout/products/{published_product['id']}")
    wechat_user = WeChatUser()
    genuine = urlsplit(wechat_user.open(asked.headers["Location"]))
    code = parse_qs(genuine.query)["code"][0]
    # An attacker's link: a real code (for the attacker's own WeChat, say) with a state of their making.
    for forged in (f"{AUTHORISED}?code={code}&state={'0' * 32}", f"{AUTHORISED}?code={code}"):
        refused = in_wechat.get(forged)
        assert (refused.status_code, urlsplit(refused.headers["Location"]).path) == (303, "/")
    assert _stored(ctx, buyer.id) == []
    # The answer to our own request still works, once.
    assert in_wechat.get(_local(genuine.geturl())).status_code == 303
    assert len(_stored(ctx, buyer.id)) == 1
    again = in_wechat.get(_local(genuine.geturl()))
    assert urlsplit(again.headers["Location"]).path == "/"


def test_a_code_wechat_refuses_leaves_the_buyer_on_the_qr_code_without_asking_again(
        in_wechat, ctx, buyer, published_product, wechat):  # noqa: F811
    product_id = published_product["id"]
    asked = in_wechat.get(f"/checkout/products/{product_id}")
    coming_back = urlsplit(WeChatUser().open(asked.headers["Location"]))
    state = parse_qs(coming_back.query)["state"][0]
    back = in_wechat.get(f"{AUTHORISED}?code=not-a-code-wechat-gave&state={state}")
    assert (back.status_code, back.headers["Location"]) == (303, f"/checkout/products/{product_id}")
    assert _stored(ctx, buyer.id) == []
    assert in_wechat.get(f"/checkout/products/{product_id}").status_code == 200  # no loop back to WeChat
    payment_id, _ = _pay_with_wechat(in_wechat, product_id)
    with ctx.db.transaction(write=False) as session:
        assert session.get(Payment, payment_id).action["type"] == "qr_code"


def test_without_the_app_secret_buyers_inside_wechat_keep_the_qr_code(settings, db, buyer, published_product,
                                                                       wechat):  # noqa: F811
    app = _knowpay(settings, db, wechat, wechat_app_secret="")
    client = app.test_client()
    client.environ_base["HTTP_USER_AGENT"] = WECHAT
    sign_in(client, buyer.email)
    assert client.get(f"/checkout/products/{published_product['id']}").status_code == 200
    payment_id, location = _pay_with_wechat(client, published_product["id"])
    assert "open=1" not in location
    with app.extensions["knowpay"].db.transaction(write=False) as session:
        assert session.get(Payment, payment_id).method == "native"


def test_outside_wechat_nothing_is_asked(app, buyer, published_product):
    client = app.test_client()
    client.environ_base["HTTP_USER_AGENT"] = DESKTOP
    sign_in(client, buyer.email)
    assert client.get(f"/checkout/products/{published_product['id']}").status_code == 200


def test_the_openid_is_in_the_data_export_is_rotated_with_the_keys_and_goes_with_the_account(
        app, ctx, client, in_wechat, buyer, published_product, wechat):  # noqa: F811
    wechat_user = WeChatUser()
    _authorise(in_wechat, published_product["id"], wechat_user)
    openid = wechat_user.openid(wechat.env["KNOWPAY_WECHAT_APP_ID"])

    exported = client.get("/api/v1/me/export", headers=buyer.headers).get_json()
    [held] = exported["account"]["wechat_openids"]
    assert (held["app_id"], held["openid"]) == (wechat.env["KNOWPAY_WECHAT_APP_ID"], openid)

    rotated = FieldCipher([("new", b"n" * 32), *ctx.settings.encryption_keys])
    [result] = [r for r in rotate_field_keys(ctx.db, rotated, "new") if r.label == "WeChat openids"]
    assert (result.total, result.rotated, result.unreadable) == (1, 1, [])
    [row] = _stored(ctx, buyer.id)
    assert row.openid_encrypted.startswith("kpe1:new:")
    with ctx.db.transaction(write=False) as session:
        assert openid_for(session, rotated, user_id=buyer.id, app_id=row.app_id) == openid

    gone = client.delete("/api/v1/me", headers=buyer.headers, json={"password": "correct-horse-9"})
    assert gone.status_code == 200, gone.get_json()
    assert _stored(ctx, buyer.id) == []
