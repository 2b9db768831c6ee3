"""A first walk through the API: register, token, me, a product, an order."""


def test_buyer_registers_gets_a_token_and_orders_a_published_course(client, published_product):
    reg = client.post("/api/v1/auth/register",
                      json={"email": "ann@example.com", "password": "long-enough-1", "username": "ann"})
    assert reg.status_code == 201, reg.get_json()
    assert reg.get_json()["id"].startswith("usr_")
    tok = client.post("/api/v1/auth/token", json={"email": "ann@example.com", "password": "long-enough-1"})
    assert tok.status_code == 200, tok.get_json()
    headers = {"Authorization": f"Bearer {tok.get_json()['access_token']}"}
    me = client.get("/api/v1/me", headers=headers)
    assert me.get_json()["email"] == "ann@example.com"
    order = client.post("/api/v1/orders", headers=headers, json={"items": [{"product_id": published_product["id"]}]})
    assert order.status_code == 201, order.get_json()
    body = order.get_json()
    assert body["status"] == "pending"
    assert body["amount_total"] == 9900
    assert body["items"][0]["title"] == "Course A"
