"""Phones are told from User-Agents, and get the payment method that opens the app on the phone itself."""

from __future__ import annotations

import pytest

from knowpay.web.views.mobile import in_wechat, is_phone, phone_method

IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.4 Mobile/15E148 Safari/604.1")
ANDROID = ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
           "Mobile Safari/537.36")
HUAWEI = ("Mozilla/5.0 (Linux; Android 12; HarmonyOS; NOH-AN00) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/99.0 Mobile Safari/537.36")
WECHAT = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI Language/zh_CN")
DESKTOP = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/124.0.0.0 Safari/537.36")
MAC = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
       "Version/17.4 Safari/605.1.15")


@pytest.mark.parametrize("agent", [IPHONE, ANDROID, HUAWEI, WECHAT])
def test_phones_are_told_by_their_user_agent(agent):
    assert is_phone(agent)


@pytest.mark.parametrize("agent", [DESKTOP, MAC, "", None, "curl/8.5.0"])
def test_computers_and_unknown_agents_are_not_phones(agent):
    assert not is_phone(agent)


def test_only_wechats_own_browser_is_in_wechat():
    assert in_wechat(WECHAT)
    assert not any(in_wechat(agent) for agent in (IPHONE, ANDROID, DESKTOP, None))


@pytest.mark.parametrize("agent", [IPHONE, ANDROID, HUAWEI])
def test_a_phone_pays_alipay_by_wap_and_wechat_by_h5(agent):
    assert (phone_method("alipay", agent), phone_method("wechat", agent)) == ("wap", "h5")


@pytest.mark.parametrize("channel", ["sandbox", "stripe", "wallet", "bank_transfer"])
def test_other_channels_keep_their_own_method_on_a_phone(channel):
    assert phone_method(channel, IPHONE) is None


def test_a_computer_keeps_the_qr_code():
    assert phone_method("alipay", DESKTOP) is None and phone_method("wechat", DESKTOP) is None


def test_inside_wechat_wechat_pay_opens_in_the_page_once_the_openid_is_known():
    assert phone_method("wechat", WECHAT, wechat_openid="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o") == "jsapi"
    # Until then (no app secret, authorisation failed): the QR code page, never H5, which WeChat refuses.
    assert phone_method("wechat", WECHAT) is None


def test_inside_wechat_alipay_keeps_the_qr_code():
    # Alipay's pages are blocked inside WeChat; an openid changes nothing for Alipay.
    assert phone_method("alipay", WECHAT, wechat_openid="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o") is None


def test_an_openid_outside_wechat_changes_nothing():
    assert phone_method("wechat", IPHONE, wechat_openid="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o") == "h5"
    assert phone_method("wechat", DESKTOP, wechat_openid="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o") is None
