"""The admin risk API: rules as data (validated when saved), value lists, decisions, permissions."""

from __future__ import annotations


def test_rules_are_listed_with_their_defaults_and_fault_behaviour(client, admin):
    answer = client.get("/api/v1/risk/rules", headers=admin.headers)
    assert answer.status_code == 200
    rules = {r["name"]: r for r in answer.get_json()["data"]}
    assert {"velocity", "amount", "new_account", "blocklist", "allowlist", "refund_abuse", "shared_device",
            "coupon_linked", "model_score"} <= set(rules)
    assert (rules["blocklist"]["action"], rules["blocklist"]["fail"]) == ("block", "closed")
    assert (rules["velocity"]["fail"], rules["velocity"]["enabled"], rules["velocity"]["shadow"]) == (
        "open", True, False)
    assert rules["amount"]["updated_at"] is None


def test_a_rule_change_is_saved_merged_and_used_at_once(client, admin, buyer, published_product, fake_channel):
    changed = client.patch("/api/v1/risk/rules/amount", headers=admin.headers,
                           json={"action": "block", "params": {"max_amount": 5000}})
    assert changed.status_code == 200, changed.get_json()
    body = changed.get_json()
    assert (body["action"], body["params"]["max_amount"], body["params"]["history_multiple"]) == ("block", 5000, 10)
    assert body["updated_by"] == admin.id and body["updated_at"]
    order = client.post("/api/v1/orders", headers=buyer.headers,
                        json={"items": [{"product_id": published_product["id"]}]}).get_json()
    refused = client.post(f"/api/v1/orders/{order['id']}/payments", headers=buyer.headers,
                          json={"channel": "sandbox"})
    assert refused.status_code == 403
    off = client.patch("/api/v1/risk/rules/amount", headers=admin.headers, json={"enabled": False})
    assert off.get_json()["enabled"] is False and off.get_json()["params"]["max_amount"] == 5000
    paid = client.post(f"/api/v1/orders/{order['id']}/payments", headers=buyer.headers, json={"channel": "sandbox"})
    assert paid.status_code == 201


BAD_SETTINGS = [
    ("velocity", {"params": {"limits": [{"counter": "attempts", "per": "user", "window_seconds": 7, "max": 1}]}},
     "params.limits[0]"),
    ("amount", {"params": {"max_amount": 0}}, "params.max_amount"),
    ("amount", {"params": {"colour": "red"}}, "params.colour"),
    ("amount", {"action": "maybe"}, "action"),
    ("amount", {"shadow": "yes"}, "shadow"),
    ("allowlist", {"action": "block"}, "action"),
]


def test_a_bad_rule_setting_is_refused_with_a_400_naming_the_param(client, admin):
    for rule, body, param in BAD_SETTINGS:
        answer = client.patch(f"/api/v1/risk/rules/{rule}", headers=admin.headers, json=body)
        assert answer.status_code == 400, (rule, body, answer.get_json())
        assert answer.get_json()["error"]["param"] == param, (rule, body)
    listed = {r["name"]: r for r in client.get("/api/v1/risk/rules", headers=admin.headers).get_json()["data"]}
    assert listed["amount"]["params"]["max_amount"] == 2_000_000  # nothing saved
    assert all(r["updated_at"] is None for r in listed.values())


def test_an_unknown_rule_is_404_and_rules_are_for_admins_only(client, admin, buyer, make_user):
    assert client.patch("/api/v1/risk/rules/horoscope", headers=admin.headers, json={}).status_code == 404
    support = make_user("support", second_factor=True)
    for caller in (buyer, support):
        assert client.get("/api/v1/risk/rules", headers=caller.headers).status_code == 403
        assert client.patch("/api/v1/risk/rules/amount", headers=caller.headers,
                            json={"enabled": False}).status_code == 403
        assert client.get("/api/v1/risk/reviews", headers=caller.headers).status_code == 403


def test_list_entries_are_normalised_listed_and_deleted(client, admin):
    made = client.post("/api/v1/risk/lists/ip/entries", headers=admin.headers,
                       json={"value": "203.0.113.77/24", "reason": "proxy range"})
    assert made.status_code == 201, made.get_json()
    entry = made.get_json()
    assert (entry["kind"], entry["value"], entry["reason"], entry["list"]) == (
        "ip", "203.0.113.0/24", "proxy range", "block")
    assert entry["id"].startswith("rsk_")
    trusted = client.post("/api/v1/risk/lists/email_domain/entries", headers=admin.headers,
                          json={"value": "@Partner.example", "list": "allow"})
    assert trusted.get_json()["value"] == "partner.example"
    dup = client.post("/api/v1/risk/lists/ip/entries", headers=admin.headers, json={"value": "203.0.113.0/24"})
    assert (dup.status_code, dup.get_json()["error"]["code"]) == (409, "list_entry_exists")
    bad = client.post("/api/v1/risk/lists/ip/entries", headers=admin.headers, json={"value": "999.1.1.1"})
    assert (bad.status_code, bad.get_json()["error"]["param"]) == (400, "value")
    wrong_kind = client.post("/api/v1/risk/lists/shoe_size/entries", headers=admin.headers, json={"value": "42"})
    assert wrong_kind.status_code == 400
    listed = client.get("/api/v1/risk/lists/ip/entries", headers=admin.headers).get_json()
    assert [e["value"] for e in listed["data"]] == ["203.0.113.0/24"] and listed["has_more"] is False
    gone = client.delete(f"/api/v1/risk/lists/ip/entries/{entry['id']}", headers=admin.headers)
    assert gone.status_code == 200 and gone.get_json() == {"id": entry["id"], "deleted": True}
    assert client.get("/api/v1/risk/lists/ip/entries", headers=admin.headers).get_json()["data"] == []
    assert client.delete(f"/api/v1/risk/lists/ip/entries/{entry['id']}", headers=admin.headers).status_code == 404


def test_decisions_can_be_found_by_payment_and_an_unknown_one_is_404(client, admin, buyer, published_product,
                                                                      fake_channel):
    order = client.post("/api/v1/orders", headers=buyer.headers,
                        json={"items": [{"product_id": published_product["id"]}]}).get_json()
    payment = client.post(f"/api/v1/orders/{order['id']}/payments", headers=buyer.headers,
                          json={"channel": "sandbox", "device_id": "ipad-7"}).get_json()
    found = client.get(f"/api/v1/risk/decisions?payment_id={payment['id']}", headers=admin.headers).get_json()
    [decision] = found["data"]
    assert (decision["outcome"], decision["subject"], decision["amount"]) == ("allow", "payment", 9900)
    assert decision["inputs"]["signals"]["attempts_device_600"] == 1
    assert decision["features"]["log_amount"] > 0
    assert decision["faults"] == []
    assert client.get("/api/v1/risk/decisions/rsk_0000000000000000000000", headers=admin.headers).status_code == 404


def test_the_report_and_models_answer_for_an_empty_platform(client, admin):
    report = client.get("/api/v1/risk/report?date=2026-11-24", headers=admin.headers)
    assert report.status_code == 200
    assert report.get_json()["decisions"] == 0 and report.get_json()["reviews"]["false_positive_rate"] is None
    assert client.get("/api/v1/risk/models", headers=admin.headers).get_json() == {"data": []}
    assert client.patch("/api/v1/risk/models/3", headers=admin.headers, json={"status": "active"}).status_code == 404
