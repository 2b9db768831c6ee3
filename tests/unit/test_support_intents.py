"""The assistant's reading of a message: intent and language on worked examples, and FAQ retrieval."""

from __future__ import annotations

import pytest

from knowpay.domain.errors import InvalidRequest
from knowpay.support.assistant import detect_intent, resolve_locale
from knowpay.support.faq import FaqDoc, FaqIndex, seed_entries, tokens


def intent(message: str) -> str:
    return detect_intent(message.lower())


@pytest.mark.parametrize("message, expected", [
    ("我付了钱但是看不了课程", "paid_no_access"),
    ("已经付款了，还是显示待支付", "paid_no_access"),
    ("支付一直卡住了", "paid_no_access"),
    ("I paid but have no access", "paid_no_access"),
    ("I was charged but the course is still locked", "paid_no_access"),
    ("My payment is stuck", "paid_no_access"),
    ("我想退款", "refund"),
    ("I want a refund", "refund"),
    ("can I get my money back for the ebook?", "refund"),
    ("退款多久能到账", "faq"),
    ("how long does a refund take", "faq"),
    ("为什么我的付款被拒绝了", "payment_declined"),
    ("why was my payment declined", "payment_declined"),
    ("my card payment failed", "payment_declined"),
    ("我的收据在哪", "receipt"),
    ("where is my receipt", "receipt"),
    ("I need an invoice", "receipt"),
    ("怎么用支付宝付款", "how_to_pay"),
    ("微信支付怎么用", "how_to_pay"),
    ("How do I pay with WeChat Pay?", "how_to_pay"),
    ("can I pay by bank transfer", "how_to_pay"),
    ("我要转人工", "handover"),
    ("let me talk to a human", "handover"),
    ("会员多久续费一次", "faq"),
    ("what is the weather like today", "faq"),
])
def test_each_intent_is_recognised_in_chinese_and_english(message, expected):
    assert intent(message) == expected


def test_the_language_follows_the_locale_asked_for_or_else_the_message():
    assert resolve_locale(None, "我想退款") == "zh-CN"
    assert resolve_locale(None, "I want a refund") == "en"
    assert resolve_locale("en-US", "我想退款") == "en"
    assert resolve_locale("zh", "refund") == "zh-CN"
    with pytest.raises(InvalidRequest) as refused:
        resolve_locale("fr", "remboursement")
    assert refused.value.param == "locale"


def test_chinese_is_cut_into_words_and_english_is_stemmed_with_synonyms_folded():
    assert tokens("退款多久能到账") == ["退款", "多久", "到账"]
    assert tokens("Refunds refunded refunding") == ["refund", "refund", "refund"]
    assert tokens("Where can I find the invoice?") == ["find", "receipt"]
    assert "付款" in tokens("支付宝怎么支付")  # 支付 and 付款 meet


@pytest.fixture(scope="module")
def seed_index():
    """The shipped FAQ, indexed per locale."""
    entries = list(enumerate(seed_entries(), start=1))
    return {locale: FaqIndex([FaqDoc(i, e["locale"], e["topic"], e["question"], e["answer"])
                              for i, e in entries if e["locale"] == locale],
                             {i: e["keywords"] for i, e in entries if e["locale"] == locale})
            for locale in ("zh-CN", "en")}


@pytest.mark.parametrize("locale, question, topic", [
    ("zh-CN", "退款多久能到账", "refund.timing"),
    ("zh-CN", "订单过期了", "order.expired"),
    ("zh-CN", "我付了两次钱", "payment.twice"),
    ("zh-CN", "金币怎么充值", "pay.wallet"),
    ("zh-CN", "可以分期付款吗", "pay.installments"),
    ("en", "how long until my refund arrives", "refund.timing"),
    ("en", "I was charged twice for one order", "payment.twice"),
    ("en", "can I pay with my visa card", "pay.stripe"),
    ("en", "where can I find the invoice", "receipt"),
])
def test_free_questions_find_their_faq_entry_with_confidence(seed_index, locale, question, topic):
    best = seed_index[locale].search(question)[0]
    assert (best.entry.topic, best.confident) == (topic, True)


@pytest.mark.parametrize("locale, question", [
    ("zh-CN", "今天天气怎么样"), ("en", "what's the weather today"), ("en", "tell me a joke about cats"),
])
def test_an_unrelated_question_matches_nothing_with_confidence(seed_index, locale, question):
    assert not any(match.confident for match in seed_index[locale].search(question))


def test_a_tiny_faq_still_ranks_its_one_entry():
    index = FaqIndex([FaqDoc(1, "en", None, "How do refunds work?", "Within the window, press refund.")], {})
    assert [m.entry.id for m in index.search("refund please")] == [1]
    assert FaqIndex([], {}).search("anything") == []
