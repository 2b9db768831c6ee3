"""The FAQ: admins edit it, the assistant finds answers in it by ranked retrieval.

Text is cut into words by jieba (Chinese; English words come through whole and are stemmed),
synonyms are folded onto one word, and entries are ranked by BM25. A match counts only when
it covers enough of the question's weight, so an unrelated question finds nothing rather than
the least bad entry.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import unicodedata
from dataclasses import dataclass
from functools import cache
from importlib import resources

from rank_bm25 import BM25Okapi
from sqlalchemy import select
from sqlalchemy.orm import Session

from knowpay.domain.clock import Clock
from knowpay.domain.errors import InvalidRequest, NotFound
from knowpay.support.models import FaqEntry

LOCALES = ("zh-CN", "en")
# Share of the question's BM25 weight the best entry must cover to count as an answer.
MIN_CONFIDENCE = 0.45
MAX_QUESTION = 300
MAX_ANSWER = 5000
MAX_KEYWORDS = 500

# Words the tokenizer should keep whole.
DOMAIN_WORDS = ("支付宝", "微信支付", "花呗", "到账", "扣款", "退款", "收据", "发票", "看不了", "打不开",
                "没权限", "银行转账", "对公转账", "分期", "金币", "钱包", "余额")
# Folded onto one word so that a question and an entry that say it differently still meet.
SYNONYMS = {
    "付钱": "付款", "支付": "付款", "交钱": "付款", "买": "购买", "付费": "付款", "扣款": "付款", "扣钱": "付款",
    "退钱": "退款", "退费": "退款", "退货": "退款",
    "发票": "收据", "凭证": "收据", "小票": "收据", "账单": "收据",
    "微信支付": "微信", "支付宝": "支付宝", "花呗": "分期", "银行卡": "卡", "信用卡": "卡",
    "金币": "钱包", "余额": "钱包", "转账": "银行转账", "汇款": "银行转账", "对公转账": "银行转账",
    "看不了": "权限", "打不开": "权限", "没权限": "权限", "开通": "权限", "访问": "权限",
    "payment": "pay", "paid": "pay", "charg": "pay", "purchas": "buy", "bought": "buy",
    "invoic": "receipt", "bill": "receipt", "wechatpay": "wechat", "weixin": "wechat", "coin": "wallet",
    "balanc": "wallet", "transfer": "banktransfer", "wire": "banktransfer", "installment": "installm",
    "huabei": "installm", "credit": "card", "debit": "card", "stripe": "card", "visa": "card",
    "mastercard": "card", "unlock": "access",
}
_STOPWORDS = (
    "的", "了", "吗", "呢", "吧", "啊", "呀", "我", "你", "您", "我的", "是", "在", "怎么", "怎样", "如何", "什么",
    "为什么", "请问", "一下", "可以", "能", "能不能", "要", "想", "我想", "这个", "那个", "和", "与", "用", "有", "还",
    "就", "都", "也", "被", "把", "给", "到", "哪", "哪里", "哪儿",
    "a", "an", "the", "i", "me", "my", "mine", "you", "your", "we", "our", "it", "its", "is", "are", "was", "were",
    "be", "been", "am", "do", "does", "did", "done", "to", "of", "for", "with", "in", "on", "at", "by", "and", "or",
    "how", "what", "why", "where", "when", "which", "who", "can", "could", "would", "should", "will", "shall",
    "please", "this", "that", "there", "here", "have", "has", "had", "get", "got", "so", "if", "but",
    "not", "no", "any", "some", "from", "about", "just", "want", "need", "hi", "hello",
)
_WORD = re.compile(r"[0-9a-z]+|[\u3400-\u9fff]+")
log = logging.getLogger(__name__)
_init_lock = threading.Lock()


@cache
def _tokenizer():
    """jieba's tokenizer with its bundled dictionary, loaded once on first use (about half a second)."""
    import jieba

    with _init_lock:
        jieba.setLogLevel(logging.WARNING)
        tokenizer = jieba.Tokenizer()
        tokenizer.initialize()
        for word in DOMAIN_WORDS:
            tokenizer.add_word(word)
        return tokenizer


def _stem(word: str) -> str:
    """Enough English stemming for short questions: refunds/refunded/refunding → refund."""
    if not word.isascii() or len(word) <= 3:
        return word
    for suffix, replacement in (("ies", "y"), ("sses", "ss"), ("ing", ""), ("ed", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not (suffix == "s" and word[-2] in "su"):
            word = word[: len(word) - len(suffix)] + replacement
            break
    if word.endswith("e") and len(word) > 4:
        word = word[:-1]
    return word


STOPWORDS = frozenset(_stem(word) for word in _STOPWORDS)


def tokens(text: str) -> list[str]:
    """The words of `text` that carry meaning, stemmed and with synonyms folded."""
    text = unicodedata.normalize("NFKC", text).lower()
    out = []
    for piece in _tokenizer().cut_for_search(text):
        if not _WORD.fullmatch(piece) or (piece.isascii() and len(piece) < 2):
            continue
        word = _stem(piece)
        word = SYNONYMS.get(word, word)
        if word not in STOPWORDS:
            out.append(word)
    return out


@dataclass(frozen=True)
class FaqDoc:
    id: int
    locale: str
    topic: str | None
    question: str
    answer: str


@dataclass(frozen=True)
class FaqMatch:
    entry: FaqDoc
    score: float
    # Share of the question's weight this entry covers; at least MIN_CONFIDENCE to count as an answer.
    confidence: float

    @property
    def confident(self) -> bool:
        return self.confidence >= MIN_CONFIDENCE


class _Bm25(BM25Okapi):
    """BM25 with Lucene's idf, which stays positive however small the FAQ is."""

    def _calc_idf(self, nd: dict) -> None:
        for word, freq in nd.items():
            self.idf[word] = math.log(1 + (self.corpus_size - freq + 0.5) / (freq + 0.5))


class FaqIndex:
    """BM25 over a set of entries; the question counts twice, keywords and answer once."""

    def __init__(self, docs: list[FaqDoc], keywords: dict[int, str]) -> None:
        self.docs = docs
        corpus = [tokens(d.question) * 2 + tokens(keywords.get(d.id, "")) + tokens(d.answer) for d in docs]
        self._bm25 = _Bm25(corpus) if docs and any(corpus) else None
        # What a question word the FAQ never uses would weigh: it lowers the confidence of every match.
        self._unseen_idf = math.log(1 + (len(docs) + 0.5) / 0.5)

    def search(self, question: str, *, limit: int = 3) -> list[FaqMatch]:
        words = tokens(question)
        if self._bm25 is None or not words:
            return []
        scores = self._bm25.get_scores(words)
        weight = sum(self._bm25.idf.get(w, self._unseen_idf) for w in words)
        ranked = sorted(range(len(self.docs)), key=lambda i: (-scores[i], self.docs[i].id))
        return [FaqMatch(self.docs[i], float(scores[i]), float(scores[i]) / weight)
                for i in ranked[:limit] if scores[i] > 0]


_indexes: dict[tuple, FaqIndex] = {}
_indexes_lock = threading.Lock()
MAX_CACHED_INDEXES = 8


def faq_index(session: Session, locale: str) -> FaqIndex:
    """The index of the published entries in `locale`, rebuilt only when an entry changed."""
    rows = session.execute(select(FaqEntry.id, FaqEntry.updated_at).where(
        FaqEntry.locale == locale, FaqEntry.published.is_(True)).order_by(FaqEntry.id)).all()
    key = (str(session.get_bind().engine.url), locale, tuple(tuple(row) for row in rows))
    with _indexes_lock:
        found = _indexes.get(key)
    if found is not None:
        return found
    entries = list(session.scalars(select(FaqEntry).where(FaqEntry.id.in_([r.id for r in rows]))
                                   .order_by(FaqEntry.id)))
    index = FaqIndex([FaqDoc(e.id, e.locale, e.topic, e.question, e.answer) for e in entries],
                     {e.id: e.keywords for e in entries})
    with _indexes_lock:
        if len(_indexes) >= MAX_CACHED_INDEXES:
            _indexes.clear()
        _indexes[key] = index
    return index


def search_faq(session: Session, question: str, locale: str, *, limit: int = 3) -> list[FaqMatch]:
    """The best published entries for `question` in `locale`, best first."""
    return faq_index(session, locale).search(question, limit=limit)


def entry_for_topic(session: Session, topic: str, locale: str) -> FaqEntry | None:
    """The published entry about `topic` in `locale` (English when the locale has none)."""
    for wanted in dict.fromkeys((locale, "en")):
        entry = session.scalar(select(FaqEntry).where(
            FaqEntry.topic == topic, FaqEntry.locale == wanted, FaqEntry.published.is_(True))
            .order_by(FaqEntry.id).limit(1))
        if entry is not None:
            return entry
    return None


# Admin editing ------------------------------------------------------------------------------------

def _check_entry(*, locale: str | None = None, question: str | None = None, answer: str | None = None,
                 keywords: str | None = None, topic: str | None = None) -> None:
    if locale is not None and locale not in LOCALES:
        raise InvalidRequest(f"locale must be one of {', '.join(LOCALES)}.", code="invalid_locale", param="locale")
    for name, value, limit in (("question", question, MAX_QUESTION), ("answer", answer, MAX_ANSWER)):
        if value is not None and (not value.strip() or len(value) > limit):
            raise InvalidRequest(f"`{name}` must be 1 to {limit} characters.", code="invalid_parameter",
                                 param=name)
    if keywords is not None and len(keywords) > MAX_KEYWORDS:
        raise InvalidRequest(f"`keywords` must be at most {MAX_KEYWORDS} characters.", code="invalid_parameter",
                             param="keywords")
    if topic is not None and not re.fullmatch(r"[a-z0-9_.-]{1,40}", topic):
        raise InvalidRequest("`topic` is 1 to 40 of a-z, 0-9, '.', '_' and '-'.", code="invalid_parameter",
                             param="topic")


def add_entry(session: Session, *, locale: str, question: str, answer: str, keywords: str = "",
              topic: str | None = None, published: bool = True, editor_id: str | None, clock: Clock) -> FaqEntry:
    _check_entry(locale=locale, question=question, answer=answer, keywords=keywords, topic=topic)
    now = clock.now()
    entry = FaqEntry(locale=locale, question=question, answer=answer, keywords=keywords, topic=topic,
                     published=published, created_at=now, updated_at=now, updated_by=editor_id)
    session.add(entry)
    session.flush()
    return entry


def list_entries(session: Session, *, locale: str | None = None, published_only: bool = True) -> list[FaqEntry]:
    stmt = select(FaqEntry)
    if published_only:
        stmt = stmt.where(FaqEntry.published.is_(True))
    if locale:
        stmt = stmt.where(FaqEntry.locale == locale)
    return list(session.scalars(stmt.order_by(FaqEntry.locale, FaqEntry.id)))


def get_entry(session: Session, entry_id: int) -> FaqEntry:
    entry = session.get(FaqEntry, entry_id)
    if entry is None:
        raise NotFound("No such FAQ entry.", param="id")
    return entry


def edit_entry(session: Session, entry_id: int, *, changes: dict, editor_id: str, clock: Clock) -> FaqEntry:
    """Change some of locale, question, answer, keywords, topic, published."""
    entry = get_entry(session, entry_id)
    _check_entry(**{k: v for k, v in changes.items() if k != "published"})
    for name, value in changes.items():
        setattr(entry, name, value)
    entry.updated_at, entry.updated_by = clock.now(), editor_id
    session.flush()
    return entry


def delete_entry(session: Session, entry_id: int) -> None:
    session.delete(get_entry(session, entry_id))
    session.flush()


def seed_entries() -> list[dict]:
    """The FAQ shipped with KnowPay (zh-CN and en): paying with each channel, refunds, receipts, access."""
    return json.loads(resources.files("knowpay.support").joinpath("faq_seed.json").read_text(encoding="utf-8"))


def load_entries(session: Session, entries: list[dict], *, clock: Clock) -> int:
    """Add the entries whose (locale, question) is not there yet; returns how many were added."""
    existing = {tuple(row) for row in session.execute(select(FaqEntry.locale, FaqEntry.question))}
    added = 0
    for n, item in enumerate(entries):
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("locale", "question", "answer")):
            raise InvalidRequest(f"FAQ entry {n} needs locale, question and answer as text.", code="invalid_faq_entry")
        if (item["locale"], item["question"]) in existing:
            continue
        add_entry(session, locale=item["locale"], question=item["question"], answer=item["answer"],
                  keywords=item.get("keywords", ""), topic=item.get("topic"), published=item.get("published", True),
                  editor_id=None, clock=clock)
        existing.add((item["locale"], item["question"]))
        added += 1
    return added
