"""Idempotency-Key (API.md Conventions): a retried mutation is answered once and done once."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests
from sqlalchemy import func, select, update
from werkzeug.serving import make_server

from knowpay.accounts.models import User
from knowpay.idempotency.models import IdempotencyKey
from knowpay.orders.models import Order


def count_orders(db) -> int:
    with db.transaction(write=False) as session:
        return session.scalar(select(func.count()).select_from(Order))


def post_order(client, caller, product_id: str, key: str | None, **extra):
    headers = dict(caller.headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post("/api/v1/orders", headers=headers,
                       json={"items": [{"product_id": product_id}], **extra})


def test_the_same_key_and_body_replays_the_first_answer_and_orders_once(client, db, buyer, published_product):
    first = post_order(client, buyer, published_product["id"], "order-1")
    assert first.status_code == 201, first.get_json()
    assert "Idempotent-Replayed" not in first.headers
    again = post_order(client, buyer, published_product["id"], "order-1")
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert count_orders(db) == 1


def test_a_replay_is_the_stored_answer_not_a_fresh_read(client, buyer, published_product):
    first = post_order(client, buyer, published_product["id"], "order-1").get_json()
    client.post(f"/api/v1/orders/{first['id']}/cancel", headers=buyer.headers)
    again = post_order(client, buyer, published_product["id"], "order-1")
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["status"] == "pending"


def test_the_same_body_written_differently_is_still_the_same_request(client, db, buyer, published_product):
    headers = {**buyer.headers, "Idempotency-Key": "k", "Content-Type": "application/json"}
    pid = published_product["id"]
    first = client.post("/api/v1/orders", headers=headers, data=f'{{"items": [{{"product_id": "{pid}"}}]}}')
    again = client.post("/api/v1/orders", headers=headers, data=f'{{"items":[{{"product_id":"{pid}"}}]}}\n')
    assert first.status_code == again.status_code == 201
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert count_orders(db) == 1


def test_without_a_key_every_request_orders_again(client, db, buyer, published_product):
    assert post_order(client, buyer, published_product["id"], None).status_code == 201
    assert post_order(client, buyer, published_product["id"], None).status_code == 201
    assert count_orders(db) == 2


def test_the_same_key_with_another_body_is_422_idempotency_key_reused(client, db, buyer, creator,
                                                                      published_product):
    assert post_order(client, buyer, published_product["id"], "order-1").status_code == 201
    other = client.post("/api/v1/products", headers=creator.headers,
                        json={"title": "B", "kind": "ebook", "amount": 500, "currency": "cny"}).get_json()
    client.post(f"/api/v1/products/{other['id']}/publish", headers=creator.headers)
    response = post_order(client, buyer, other["id"], "order-1")
    assert response.status_code == 422, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == "idempotency_key_reused"
    assert error["type"] == "invalid_request"
    assert "Idempotent-Replayed" not in response.headers
    assert count_orders(db) == 1


def test_the_same_key_on_another_path_is_reused_too(client, buyer, published_product):
    first = post_order(client, buyer, published_product["id"], "k1").get_json()
    response = client.post(f"/api/v1/orders/{first['id']}/cancel",
                           headers={**buyer.headers, "Idempotency-Key": "k1"})
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "idempotency_key_reused"
    still = client.get(f"/api/v1/orders/{first['id']}", headers=buyer.headers).get_json()
    assert still["status"] == "pending"


def test_keys_belong_to_one_user(client, db, buyer, make_user, published_product):
    mine = post_order(client, buyer, published_product["id"], "shared-key")
    other = make_user("buyer")
    theirs = post_order(client, other, published_product["id"], "shared-key")
    assert mine.status_code == theirs.status_code == 201
    assert "Idempotent-Replayed" not in theirs.headers
    assert theirs.get_json()["id"] != mine.get_json()["id"]
    assert theirs.get_json()["buyer_id"] == other.id
    assert count_orders(db) == 2


def test_a_refusal_is_replayed_too(client, db, buyer, creator, published_product):
    client.post(f"/api/v1/products/{published_product['id']}/archive", headers=creator.headers)
    first = post_order(client, buyer, published_product["id"], "order-1")
    assert first.status_code == 400, first.get_json()
    client.post(f"/api/v1/products/{published_product['id']}/publish", headers=creator.headers)
    again = post_order(client, buyer, published_product["id"], "order-1")
    assert again.status_code == 400
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert count_orders(db) == 0
    assert post_order(client, buyer, published_product["id"], "order-2").status_code == 201


def test_a_conflict_is_replayed_with_its_status(client, buyer, published_product):
    order = post_order(client, buyer, published_product["id"], None).get_json()
    cancel = {**buyer.headers, "Idempotency-Key": "cancel-again"}
    assert client.post(f"/api/v1/orders/{order['id']}/cancel", headers=buyer.headers).status_code == 200
    first = client.post(f"/api/v1/orders/{order['id']}/cancel", headers=cancel)
    again = client.post(f"/api/v1/orders/{order['id']}/cancel", headers=cancel)
    assert first.status_code == again.status_code == 409
    assert again.get_json()["error"]["code"] == "order_not_pending"
    assert again.headers["Idempotent-Replayed"] == "true"


def test_a_key_older_than_24_hours_may_be_used_again(client, db, buyer, published_product):
    assert post_order(client, buyer, published_product["id"], "old-key").status_code == 201
    with db.transaction() as session:
        session.execute(update(IdempotencyKey).values(
            created_at=datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=25)))
    again = post_order(client, buyer, published_product["id"], "old-key")
    assert again.status_code == 201
    assert "Idempotent-Replayed" not in again.headers
    assert count_orders(db) == 2


def test_a_key_longer_than_255_characters_is_refused(client, db, buyer, published_product):
    response = post_order(client, buyer, published_product["id"], "k" * 256)
    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == "Idempotency-Key"
    assert count_orders(db) == 0
    assert post_order(client, buyer, published_product["id"], "k" * 255).status_code == 201


def test_an_empty_key_is_refused(client, db, buyer, published_product):
    response = post_order(client, buyer, published_product["id"], "")
    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == "Idempotency-Key"
    assert count_orders(db) == 0


def test_a_running_request_with_the_key_answers_409_in_use(app, client, db, buyer, published_product):
    from knowpay.idempotency import service as idem

    body = b'{"items": [{"product_id": "%s"}]}' % published_product["id"].encode()
    # Another worker holds the claim on this key and has not finished.
    print_ = idem.fingerprint("POST", "/api/v1/orders", body, secret=app.config["SECRET_KEY"])
    idem.claim(db, principal=buyer.id, key="busy", print_=print_,
               now=datetime.now(UTC).replace(tzinfo=None))
    response = client.post("/api/v1/orders", headers={**buyer.headers, "Idempotency-Key": "busy",
                                                       "Content-Type": "application/json"}, data=body)
    assert response.status_code == 409, response.get_json()
    assert response.get_json()["error"]["code"] == "idempotency_key_in_use"
    assert count_orders(db) == 0


def test_a_claim_abandoned_by_a_dead_worker_is_taken_over(app, client, db, buyer, published_product):
    from knowpay.idempotency import service as idem

    body = b'{"items": [{"product_id": "%s"}]}' % published_product["id"].encode()
    print_ = idem.fingerprint("POST", "/api/v1/orders", body, secret=app.config["SECRET_KEY"])
    idem.claim(db, principal=buyer.id, key="orphan", print_=print_,
               now=datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=10))
    response = client.post("/api/v1/orders", headers={**buyer.headers, "Idempotency-Key": "orphan",
                                                       "Content-Type": "application/json"}, data=body)
    assert response.status_code == 201, response.get_json()
    assert count_orders(db) == 1


def test_registering_twice_with_one_key_makes_one_account(client, db):
    body = {"email": "ann@example.com", "password": "long-enough-1", "username": "ann"}
    first = client.post("/api/v1/auth/register", json=body, headers={"Idempotency-Key": "signup"})
    again = client.post("/api/v1/auth/register", json=body, headers={"Idempotency-Key": "signup"})
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    with db.transaction(write=False) as session:
        assert session.scalar(select(func.count()).select_from(User)) == 1


def test_a_stored_request_is_no_fast_hash_of_the_password(client, db):
    body = {"email": "ann@example.com", "password": "long-enough-1", "username": "ann"}
    client.post("/api/v1/auth/register", json=body, headers={"Idempotency-Key": "signup"})
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    with db.transaction(write=False) as session:
        stored = session.scalars(select(IdempotencyKey.fingerprint)).one()
    assert stored != hashlib.sha256(b"POST /api/v1/auth/register\n" + canonical).hexdigest()
    assert stored != hashlib.sha256(canonical).hexdigest()


def test_a_token_is_never_replayed_or_stored(client, db, buyer):
    body = {"email": buyer.email, "password": "correct-horse-9"}
    first = client.post("/api/v1/auth/token", json=body, headers={"Idempotency-Key": "login"})
    again = client.post("/api/v1/auth/token", json=body, headers={"Idempotency-Key": "login"})
    assert first.status_code == again.status_code == 200
    assert "Idempotent-Replayed" not in again.headers
    assert first.get_json()["access_token"] != again.get_json()["access_token"]
    with db.transaction(write=False) as session:
        assert session.scalar(select(func.count()).select_from(IdempotencyKey)) == 0


@pytest.fixture
def live_url(app) -> Iterator[str]:
    """The app served by a threaded werkzeug server on a free local port."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)
    server.server_close()


@pytest.mark.slow
@pytest.mark.parametrize("attempt", range(3))
def test_concurrent_requests_with_one_key_create_one_order(live_url, db, buyer, published_product, attempt):
    threads = 8
    barrier = threading.Barrier(threads)
    results: list[tuple[int, dict, str | None]] = []
    failures: list[BaseException] = []
    lock = threading.Lock()
    headers = {**buyer.headers, "Idempotency-Key": f"same-moment-{attempt}"}
    body = {"items": [{"product_id": published_product["id"]}]}

    def post() -> None:
        try:
            with requests.Session() as http:
                barrier.wait(timeout=10)
                response = http.post(f"{live_url}/api/v1/orders", json=body, headers=headers, timeout=30)
                with lock:
                    results.append((response.status_code, response.json(),
                                    response.headers.get("Idempotent-Replayed")))
        except BaseException as exc:  # reported below, so a thread's failure fails the test
            failures.append(exc)

    workers = [threading.Thread(target=post) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not failures, failures
    assert len(results) == threads
    assert count_orders(db) == 1
    with db.transaction(write=False) as session:
        order_id = session.scalar(select(Order.id))
    originals = [r for r in results if r[0] == 201 and r[2] is None]
    replays = [r for r in results if r[0] == 201 and r[2] == "true"]
    in_use = [r for r in results if r[0] == 409]
    assert len(originals) == 1, results
    assert len(originals) + len(replays) + len(in_use) == threads, results
    assert all(r[1]["id"] == order_id for r in originals + replays)
    assert all(r[1]["error"]["code"] == "idempotency_key_in_use" for r in in_use)
    # Once the first has finished, the key answers with the replay.
    with requests.Session() as http:
        late = http.post(f"{live_url}/api/v1/orders", json=body, headers=headers, timeout=30)
    assert late.status_code == 201
    assert late.headers.get("Idempotent-Replayed") == "true"
    assert late.json()["id"] == order_id
