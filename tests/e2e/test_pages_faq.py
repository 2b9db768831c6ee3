"""The assistant's FAQ in the admin console: admins add, edit, unpublish and delete answers, and the
assistant answers from them at once; support staff may read them, buyers may not."""

from __future__ import annotations

import re

import pytest

from tests.e2e.browser.forms import post_form, sign_in

ANSWER = {"locale": "en", "question": "Can I share a course with my family?", "keywords": "family share spouse",
          "answer": "Each purchase is for one account; family members buy their own.", "published": "on"}


@pytest.fixture
def admin_client(app, make_user):
    client = app.test_client()
    sign_in(client, make_user("admin").email)
    return client


def _ask(client, buyer, message: str) -> dict:
    answer = client.post("/api/v1/assistant", headers=buyer.headers, json={"message": message, "locale": "en"})
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()


def test_an_answer_added_in_the_console_is_used_by_the_assistant_at_once(admin_client, client, buyer):
    assert "family members buy their own" not in _ask(client, buyer, "Can I share a course with my family?")["reply"]
    added = post_form(admin_client, "/admin/faq/new", ANSWER)
    assert added.status_code == 303
    listing = admin_client.get("/admin/faq", query_string={"locale": "en"}).get_data(as_text=True)
    assert "Can I share a course with my family?" in listing
    assert "family members buy their own" in _ask(client, buyer, "Can I share a course with my family?")["reply"]

    entry_id = int(re.search(r'href="/admin/faq/(\d+)"', listing).group(1))
    form = admin_client.get(f"/admin/faq/{entry_id}").get_data(as_text=True)
    assert 'value="Can I share a course with my family?"' in form and "checked" in form
    unpublished = {**ANSWER, "answer": "Not yet."}
    del unpublished["published"]
    assert post_form(admin_client, f"/admin/faq/{entry_id}", unpublished).status_code == 303
    assert "未发布" in admin_client.get("/admin/faq").get_data(as_text=True)
    assert "Not yet." not in _ask(client, buyer, "Can I share a course with my family?")["reply"]

    assert post_form(admin_client, f"/admin/faq/{entry_id}/delete").status_code == 303
    assert admin_client.get(f"/admin/faq/{entry_id}").status_code == 404


def test_a_bad_answer_is_refused_on_the_form_and_nothing_is_written(admin_client):
    refused = post_form(admin_client, "/admin/faq/new", {**ANSWER, "question": "  ", "topic": "Not A Topic"})
    assert refused.status_code == 400
    page = refused.get_data(as_text=True)
    assert 'aria-invalid="true"' in page and "family members buy their own" in page  # typed text kept
    assert "Can I share a course with my family?" not in admin_client.get("/admin/faq").get_data(as_text=True)


def test_support_reads_the_answers_and_buyers_cannot(app, make_user, buyer):
    support = app.test_client()
    sign_in(support, make_user("support").email)
    page = support.get("/admin/faq")
    assert page.status_code == 200 and "/admin/faq/new" not in page.get_data(as_text=True)
    assert post_form(support, "/admin/faq/new", ANSWER).status_code == 403
    shopper = app.test_client()
    sign_in(shopper, buyer.email)
    assert shopper.get("/admin/faq").status_code == 403
