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


def test_a_computer_and_wechats_browser_keep_the_qr_code():
    assert phone_method("alipay", DESKTOP) is None and phone_method("wechat", DESKTOP) is None
    # Inside WeChat, H5 is refused and Alipay's pages are blocked; JSAPI needs an openid the pages lack.
    assert phone_method("alipay", WECHAT) is None and phone_method("wechat", WECHAT) is None
