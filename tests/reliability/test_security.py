"""Security matrix: object-level authorization (BOLA) on every route with an id, every kind of bad
credential on HTTP and WebSocket routes, and callback URLs aimed inside the network (SSRF).

The BOLA routes come from the OpenAPI schema the API serves, so a new route with a path id fails
`test_another_users_objects_are_404_on_every_route_with_an_id` until it gets a case here. Admin
routes are covered by tests/test_operators.py (a user gets 403 there, whatever the id), and the
unit table of the SSRF guard by tests/test_webhooks.py: here the same addresses go through the
submitting routes, and nothing may be created or reserved.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
import websockets

from tests.conftest import Stack, User, chat_job, wait_for_status
from tests.test_auth import craft_token


def ws_url(stack: Stack, path: str) -> str:
    return stack.api_url.replace("http://", "ws://") + path


def error_code(resp: httpx.Response) -> str:
    """The stable code of an error in either shape (problem+json, or OpenAI's `{"error": …}`), with its request id."""
    body = resp.json()
    found = body.get("error", body)
    assert found["request_id"], resp.text
    return str(found["code"])


async def ws_refusal(stack: Stack, path: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """(close code, problem) of a refused WebSocket subscription."""
    async with websockets.connect(ws_url(stack, path), additional_headers=headers, open_timeout=10) as ws:
        problem = json.loads(await ws.recv())
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None, "the server did not close the socket"
    return closed.value.rcvd.code, problem


def ledger_and_balance(stack: Stack, user: User) -> tuple[list[str], int, int]:
    """The kinds of the user's ledger rows, balance and reserved credits."""
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        kinds = [r[0] for r in conn.execute("SELECT kind FROM credit_ledger WHERE user_id = %s ORDER BY id",
                                            (user.id,)).fetchall()]
        row = conn.execute("SELECT balance, reserved FROM credit_accounts WHERE user_id = %s", (user.id,)).fetchone()
    assert row is not None
    return kinds, row[0], row[1]


# --- BOLA: another user's id is 404 on every route ------------------------------------------------------------


@dataclass
class Objects:
    """One of everything, owned by `user`: the ids that fill path templates."""

    ids: dict[str, str]


@pytest.fixture
async def owned(stack: Stack, user: User, client: httpx.AsyncClient) -> Objects:
    """A job, a key, a batch with its input file, a searchable file and a vector store holding it."""
    job = (await client.post("/v1/jobs", json=chat_job("mine"))).json()
    key = (await client.post("/v1/keys", json={"name": "mine"})).json()
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "sim-small", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}}
    batch_file = (await client.post("/v1/files", data={"purpose": "batch"},
                                    files={"file": ("in.jsonl", json.dumps(line) + "\n")})).json()
    batch = (await client.post("/v1/batches", json={"input_file_id": batch_file["id"], "completion_window": "24h",
                                                    "endpoint": "/v1/chat/completions"})).json()
    doc = (await client.post("/v1/files", data={"purpose": "user_data"},
                             files={"file": ("notes.txt", "Private notes about the harbour.")})).json()
    store = (await client.post("/v1/vector_stores", json={"name": "mine", "file_ids": [doc["id"]]})).json()
    ids = {"job_id": job["id"], "key_id": key["id"], "batch_id": batch["id"], "file_id": doc["id"],
           "store_id": store["id"]}
    assert all(ids.values()), ids
    await wait_for_status(client, doc["process_job_id"])  # so no processing is in flight while ids are probed
    return Objects(ids)


#: Every route with a path id (admin ones aside) -> the body of its request, if it takes one.
#: A new route with an id must be added here (the test compares this with the schema).
BOLA_CASES: dict[tuple[str, str], dict[str, Any] | None] = {
    ("GET", "/v1/jobs/{job_id}"): None,
    ("POST", "/v1/jobs/{job_id}/cancel"): None,
    ("GET", "/v1/jobs/{job_id}/events"): None,
    ("DELETE", "/v1/keys/{key_id}"): None,
    ("GET", "/v1/batches/{batch_id}"): None,
    ("POST", "/v1/batches/{batch_id}/cancel"): None,
    ("GET", "/v1/batches/{batch_id}/events"): None,
    ("GET", "/v1/files/{file_id}"): None,
    ("GET", "/v1/files/{file_id}/content"): None,
    ("GET", "/v1/files/{file_id}/chunks"): None,
    ("POST", "/v1/files/{file_id}/process"): None,
    ("DELETE", "/v1/files/{file_id}"): None,
    ("GET", "/v1/vector_stores/{store_id}"): None,
    ("POST", "/v1/vector_stores/{store_id}"): {"name": "taken over"},
    ("DELETE", "/v1/vector_stores/{store_id}"): None,
    ("GET", "/v1/vector_stores/{store_id}/files"): None,
    ("POST", "/v1/vector_stores/{store_id}/files"): {"file_id": "{file_id}"},
    ("GET", "/v1/vector_stores/{store_id}/files/{file_id}"): None,
    ("POST", "/v1/vector_stores/{store_id}/files/{file_id}"): {"attributes": {"owner": "me"}},
    ("DELETE", "/v1/vector_stores/{store_id}/files/{file_id}"): None,
    ("POST", "/v1/vector_stores/{store_id}/search"): {"query": "harbour"},
}
#: Path parameters that name no user's object: a provider of payment webhooks.
NOT_OWNED = {"/v1/billing/webhooks/{provider}"}


async def test_another_users_objects_are_404_on_every_route_with_an_id(
    stack: Stack, client: httpx.AsyncClient, other_user: User, owned: Objects
) -> None:
    schema = (await client.get("/docs/openapi.json")).json()
    routes = {(method.upper(), path) for path, item in schema["paths"].items()
              if "{" in path and not path.startswith("/v1/admin") and path not in NOT_OWNED
              for method in item if method in {"get", "post", "put", "patch", "delete"}}
    assert routes == set(BOLA_CASES), f"routes with an id and no BOLA case (or gone): {routes ^ set(BOLA_CASES)}"

    def fill(text: str) -> str:
        for name, value in owned.ids.items():
            text = text.replace("{" + name + "}", value)
        return text

    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30,
                                 headers={"Authorization": f"Bearer {other_user.key}"}) as other:
        for (method, template), body in BOLA_CASES.items():
            payload = json.loads(fill(json.dumps(body))) if body is not None else None
            resp = await other.request(method, fill(template), json=payload)
            assert resp.status_code == 404, (method, template, resp.status_code, resp.text)
            assert error_code(resp).endswith("not_found"), (method, template, resp.text)
    # ...and the owner still sees every object as it was (the ids were real, nothing was changed).
    for path in ("/v1/jobs/{job_id}", "/v1/batches/{batch_id}", "/v1/files/{file_id}",
                 "/v1/vector_stores/{store_id}", "/v1/vector_stores/{store_id}/files/{file_id}"):
        assert (await client.get(fill(path))).status_code == 200, path
    assert (await client.get(fill("/v1/vector_stores/{store_id}"))).json()["name"] == "mine"
    keys = {k["id"]: k for k in (await client.get("/v1/keys")).json()["data"]}
    assert keys[owned.ids["key_id"]]["revoked_at"] is None
    assert (await client.get(fill("/v1/jobs/{job_id}"))).json()["status"] != "cancelled"


async def test_another_users_job_stream_is_closed_as_not_found(
    stack: Stack, other_user: User, owned: Objects
) -> None:
    path = f"/v1/jobs/{owned.ids['job_id']}/stream"
    by_header, by_query = {"Authorization": f"Bearer {other_user.key}"}, f"?access_token={other_user.key}"
    for headers, query in ((by_header, ""), ({}, by_query)):
        code, problem = await ws_refusal(stack, path + query, headers)
        assert code == 4404 and problem["code"] == "not_found", (code, problem)


# --- Credentials: every bad kind is 401 (HTTP) or closes the socket as unauthenticated (WS) -------------------------


@pytest.fixture
async def bad_credentials(stack: Stack, user: User, client: httpx.AsyncClient) -> dict[str, dict[str, str]]:
    """Authorization headers that must all be refused, by what is wrong with them."""
    revoked = (await client.post("/v1/keys", json={"name": "revoked"})).json()
    assert (await client.delete(f"/v1/keys/{revoked['id']}")).status_code == 204
    now = int(time.time())

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    return {
        "missing": {},
        "empty bearer": {"Authorization": "Bearer"},
        "not bearer": {"Authorization": f"Basic {user.key}"},
        "malformed key": bearer("sk-sy-"),
        "invalid key": bearer("sk-sy-" + "x" * 43),
        "revoked key": bearer(revoked["key"]),
        "expired JWT": bearer(craft_token(stack, user.id, iat=now - 1000, exp=now - 10)),
        "JWT signed with another secret": bearer(craft_token(stack, user.id, secret="another-secret-" + "x" * 32)),
        "garbage JWT": bearer("eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl"),
    }


#: One route of each family (native, OpenAI-compatible, streaming, keys): (method, path, body).
AUTH_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/v1/me", None),
    ("POST", "/v1/jobs", chat_job("who am I?")),
    ("GET", f"/v1/jobs/{uuid.uuid4()}/events", None),
    ("POST", "/v1/chat/completions", {"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]}),
    ("GET", "/v1/files", None),
    ("POST", "/v1/keys", {"name": "stolen"}),
]


async def test_bad_credentials_are_401_on_http_routes(
    stack: Stack, user: User, bad_credentials: dict[str, dict[str, str]]
) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as anon:
        for what, headers in bad_credentials.items():
            for method, path, body in AUTH_ROUTES:
                resp = await anon.request(method, path, json=body, headers=headers)
                assert resp.status_code == 401, (what, method, path, resp.text)
                assert error_code(resp) in {"unauthorized", "invalid_api_key", "invalid_token"}, (what, resp.text)
                assert resp.headers["WWW-Authenticate"].startswith("Bearer"), (what, path)
    kinds, _, reserved = ledger_and_balance(stack, user)
    assert kinds == ["grant"] and reserved == 0  # no job slipped through


async def test_bad_credentials_close_websockets_as_unauthenticated(
    stack: Stack, bad_credentials: dict[str, dict[str, str]]
) -> None:
    # Closed with 4000 + 401 after one problem document (api/routes/streams.py), not 1008: the
    # client learns the status and the code, as on HTTP.
    for what, headers in bad_credentials.items():
        for path in ("/v1/events", f"/v1/jobs/{uuid.uuid4()}/stream"):
            code, problem = await ws_refusal(stack, path, headers)
            assert code == 4401 and problem["status"] == 401, (what, path, code, problem)
            assert problem["code"] in {"unauthorized", "invalid_api_key", "invalid_token"} and problem["request_id"]
            scheme, _, token = headers.get("Authorization", "").partition(" ")
            if scheme == "Bearer" and token:  # ...and the same credential in the query
                code, _ = await ws_refusal(stack, f"{path}?access_token={token}", {})
                assert code == 4401, (what, path, "query")


async def test_a_key_in_a_websockets_query_never_reaches_the_log(stack: Stack, user: User) -> None:
    async with websockets.connect(ws_url(stack, f"/v1/events?access_token={user.key}")) as ws:
        await ws.close()
    await asyncio.sleep(0.3)  # the API's log line is written as the socket closes
    log = stack.api.log()
    assert "/v1/events?access_token=[redacted]" in log  # the line is there (uvicorn's "[accepted]")...
    assert user.key not in log  # ...without the key


# --- SSRF: callbacks aimed inside the network are refused where they are submitted --------------------------------

#: Callback URLs that reach this host, the private network or the cloud metadata service, in the forms
#: attackers use to slip past naive checks. The session allows 127.0.0.2 only (tests/conftest.py).
INTERNAL_CALLBACKS = [
    "http://127.0.0.1:9/hook",
    "http://localhost:8000/hook",
    "http://10.0.0.5/hook",
    "http://192.168.1.1/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]:8000/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://2130706433/hook",  # 127.0.0.1 as one decimal number
    "http://0177.0.0.1/hook",  # octal
    "http://0x7f.0.0.1/hook",  # hexadecimal
    "http://127.1/hook",  # the short form
    "http://0/hook",  # 0.0.0.0: this host
    "http://[0:0:0:0:0:0:0:1]/hook",
]


@pytest.fixture
async def batch_input(client: httpx.AsyncClient) -> AsyncIterator[str]:
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "sim-small", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}}
    uploaded = (await client.post("/v1/files", data={"purpose": "batch"},
                                  files={"file": ("in.jsonl", json.dumps(line) + "\n")})).json()
    yield uploaded["id"]


async def test_callbacks_to_internal_addresses_are_refused_and_nothing_is_reserved(
    stack: Stack, user: User, client: httpx.AsyncClient, batch_input: str
) -> None:
    before = ledger_and_balance(stack, user)
    submissions = {
        "job": ("/v1/jobs", chat_job("call me back")),
        "embedding job": ("/v1/jobs", {"kind": "embedding", "input": {"model": "t-embed", "input": "x"}}),
        "batch": ("/v1/batches", {"input_file_id": batch_input, "completion_window": "24h",
                                  "endpoint": "/v1/chat/completions"}),
    }
    for url in INTERNAL_CALLBACKS:
        for what, (path, body) in submissions.items():
            resp = await client.post(path, json={**body, "callback_url": url})
            assert resp.status_code == 422, (url, what, resp.status_code, resp.text)
            assert error_code(resp) == "webhook_target_refused", (url, what, resp.text)
    assert ledger_and_balance(stack, user) == before
    assert (await client.get("/v1/jobs")).json()["data"] == []
    assert (await client.get("/v1/batches")).json()["data"] == []
    # The one host the session allows is accepted by the same route: the refusals above were the addresses.
    allowed = await client.post("/v1/jobs", json={**chat_job("call me back"), "callback_url": "http://127.0.0.2:9/"})
    assert allowed.status_code == 202, allowed.text
