"""Accounts and authentication over real HTTP: sign-up, login, lockout, refresh rotation, JWTs, API keys."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import psycopg
import pytest
import websockets

from jobs.accounts import KEY_PREFIX
from scripts.embedded import free_port
from scripts.procs import start_api
from tests.conftest import Stack, User, make_user, nodelay_transport
from tests.test_cli import run_cli

PASSWORD = "correct horse battery"


#: Failed logins all come from 127.0.0.1: every test starts unlocked and leaves none behind.
pytestmark = pytest.mark.usefixtures("no_lockouts")


@pytest.fixture
async def anon(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """An unauthenticated client."""
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30, transport=nodelay_transport()) as c:
        yield c


def new_email() -> str:
    return f"{uuid.uuid4().hex[:10]}@example.com"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def register(anon: httpx.AsyncClient, email: str | None = None, password: str = PASSWORD) -> str:
    email = email or new_email()
    resp = await anon.post("/v1/auth/register", json={"email": email, "password": password})
    assert resp.status_code == 201, resp.text
    return email


async def login(anon: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await anon.post("/v1/auth/login", json={"email": email, "password": password})


async def tokens_for(anon: httpx.AsyncClient, email: str | None = None) -> dict[str, Any]:
    """Register (unless `email` is given) and log in; the token pair."""
    email = email or await register(anon)
    resp = await login(anon, email)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def refresh(anon: httpx.AsyncClient, token: str) -> httpx.Response:
    return await anon.post("/v1/auth/refresh", json={"refresh_token": token})


def craft_token(stack: Stack, user_id: uuid.UUID | str, *, secret: str | None = None, **claims: Any) -> str:
    now = int(time.time())
    payload = {"sub": str(user_id), "role": "user", "tier": "free", "typ": "access", "jti": uuid.uuid4().hex,
               "iat": now, "exp": now + 600, **claims}
    return jwt.encode(payload, secret or stack.settings.jwt_secret, algorithm="HS256")


# --- sign-up and login -------------------------------------------------------------------------------------------


async def test_register_login_and_me_with_the_access_token(anon: httpx.AsyncClient, stack: Stack) -> None:
    email = new_email()
    resp = await anon.post("/v1/auth/register", json={"email": email.upper(), "password": PASSWORD})
    assert resp.status_code == 201, resp.text
    user = resp.json()
    assert set(user) == {"id", "email", "role", "tier", "created_at"}
    assert (user["email"], user["role"], user["tier"]) == (email, "user", "free")

    resp = await login(anon, email.capitalize())
    assert resp.status_code == 200, resp.text
    pair = resp.json()
    assert pair["token_type"] == "bearer" and pair["expires_in"] == stack.settings.access_token_ttl_seconds
    assert pair["refresh_token"].startswith("rt-")
    claims = jwt.decode(pair["access_token"], stack.settings.jwt_secret, algorithms=["HS256"])
    assert (claims["sub"], claims["typ"], claims["role"]) == (user["id"], "access", "user")
    assert claims["exp"] - claims["iat"] == stack.settings.access_token_ttl_seconds

    me = (await anon.get("/v1/me", headers=bearer(pair["access_token"]))).json()
    assert me == {**user, "auth": "token"}
    credits = (await anon.get("/v1/credits", headers=bearer(pair["access_token"]))).json()
    assert (credits["balance"], credits["reserved"]) == (stack.settings.signup_grant_credits, 0)


async def test_registration_is_validated_and_emails_are_unique(anon: httpx.AsyncClient) -> None:
    email = await register(anon)
    resp = await anon.post("/v1/auth/register", json={"email": email.upper(), "password": "another password"})
    assert resp.status_code == 409 and resp.json()["code"] == "email_taken"
    for body in ({"email": new_email(), "password": "short"},
                 {"email": new_email(), "password": "x" * 257},
                 {"email": "not-an-email", "password": PASSWORD},
                 {"email": "two@@example.com", "password": PASSWORD},
                 {"email": new_email(), "password": PASSWORD, "role": "admin"}):
        resp = await anon.post("/v1/auth/register", json=body)
        assert resp.status_code == 400 and resp.json()["code"] == "validation_error", body


async def test_wrong_password_and_unknown_email_get_the_same_401(anon: httpx.AsyncClient) -> None:
    email = await register(anon)
    wrong = await login(anon, email, "wrong password")
    unknown = await login(anon, new_email())
    for resp in (wrong, unknown):
        assert resp.status_code == 401
        assert resp.json()["code"] == "invalid_credentials"
    assert wrong.json()["detail"] == unknown.json()["detail"]


async def test_cli_user_with_a_password_can_log_in_and_has_the_sign_up_grant(
    anon: httpx.AsyncClient, stack: Stack
) -> None:
    email = new_email()
    made = run_cli("create-user", "--email", email, "--password", PASSWORD, env=stack.env)
    assert made.returncode == 0, made.stderr
    pair = await tokens_for(anon, email)
    credits = (await anon.get("/v1/credits", headers=bearer(pair["access_token"]))).json()
    assert credits["balance"] == stack.settings.signup_grant_credits


# --- brute force -------------------------------------------------------------------------------------------------


async def test_failed_logins_lock_the_account_even_for_the_right_password(
    anon: httpx.AsyncClient, stack: Stack
) -> None:
    email, bystander = await register(anon), await register(anon)
    limit = stack.settings.login_max_failures_per_account
    failures = await asyncio.gather(*(login(anon, email, "wrong password") for _ in range(limit)))
    assert {r.status_code for r in failures} == {401}
    locked = await login(anon, email)
    assert locked.status_code == 429 and locked.json()["code"] == "login_locked"
    assert 0 < int(locked.headers["Retry-After"]) <= stack.settings.login_lockout_seconds
    # Only that account is locked (the address is far from its own limit).
    assert (await login(anon, bystander)).status_code == 200


async def test_a_successful_login_clears_the_account_failures(anon: httpx.AsyncClient, stack: Stack) -> None:
    email = await register(anon)
    almost = stack.settings.login_max_failures_per_account - 1
    for _ in range(2):
        failures = await asyncio.gather(*(login(anon, email, "wrong password") for _ in range(almost)))
        assert {r.status_code for r in failures} == {401}
        assert (await login(anon, email)).status_code == 200


async def test_concurrent_guesses_never_exceed_the_account_limit(anon: httpx.AsyncClient, stack: Stack) -> None:
    email = await register(anon)
    limit = stack.settings.login_max_failures_per_account
    responses = await asyncio.gather(*(login(anon, email, f"guess {i}") for i in range(limit + 7)))
    assert Counter(r.status_code for r in responses) == {401: limit, 429: 7}


async def test_failed_logins_from_one_address_lock_every_account(anon: httpx.AsyncClient, stack: Stack) -> None:
    email = await register(anon)
    limit = stack.settings.login_max_failures_per_ip
    responses = await asyncio.gather(*(login(anon, new_email(), "wrong password") for _ in range(limit)))
    assert {r.status_code for r in responses} == {401}
    locked = await login(anon, email)
    assert locked.status_code == 429 and locked.json()["code"] == "login_locked"
    assert "Retry-After" in locked.headers


# --- refresh tokens ----------------------------------------------------------------------------------------------


async def test_refresh_rotates_and_each_token_works_once(anon: httpx.AsyncClient) -> None:
    first = await tokens_for(anon)
    resp = await refresh(anon, first["refresh_token"])
    assert resp.status_code == 200, resp.text
    second = resp.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert (await anon.get("/v1/me", headers=bearer(second["access_token"]))).status_code == 200
    resp = await refresh(anon, second["refresh_token"])
    assert resp.status_code == 200, resp.text


async def test_reusing_a_spent_refresh_token_revokes_its_family(anon: httpx.AsyncClient) -> None:
    email = await register(anon)
    stolen = await tokens_for(anon, email)
    other_login = await tokens_for(anon, email)
    newest = (await refresh(anon, stolen["refresh_token"])).json()

    reuse = await refresh(anon, stolen["refresh_token"])
    assert reuse.status_code == 401 and reuse.json()["code"] == "refresh_token_reused"
    resp = await refresh(anon, newest["refresh_token"])
    assert resp.status_code == 401 and resp.json()["code"] == "invalid_refresh_token"
    # Another login of the same user is another family: untouched.
    assert (await refresh(anon, other_login["refresh_token"])).status_code == 200


async def test_concurrent_refreshes_with_one_token_let_exactly_one_win(anon: httpx.AsyncClient) -> None:
    pair = await tokens_for(anon)
    responses = await asyncio.gather(*(refresh(anon, pair["refresh_token"]) for _ in range(5)))
    codes = Counter(r.status_code for r in responses)
    assert codes == {200: 1, 401: 4}, [r.text for r in responses]
    assert {r.json()["code"] for r in responses if r.status_code == 401} == {"refresh_token_reused"}


async def test_logout_revokes_the_refresh_token(anon: httpx.AsyncClient) -> None:
    pair = await tokens_for(anon)
    resp = await anon.post("/v1/auth/logout", json={"refresh_token": pair["refresh_token"]})
    assert resp.status_code == 204
    resp = await refresh(anon, pair["refresh_token"])
    assert resp.status_code == 401 and resp.json()["code"] == "invalid_refresh_token"
    # Unknown or repeated logouts are harmless.
    assert (await anon.post("/v1/auth/logout", json={"refresh_token": "rt-nonsense"})).status_code == 204
    resp = await refresh(anon, "rt-nonsense")
    assert resp.status_code == 401 and resp.json()["code"] == "invalid_refresh_token"


# --- access tokens -----------------------------------------------------------------------------------------------


async def test_expired_forged_and_foreign_tokens_are_401(anon: httpx.AsyncClient, stack: Stack, user: User) -> None:
    now = int(time.time())
    valid = craft_token(stack, user.id)
    assert (await anon.get("/v1/me", headers=bearer(valid))).status_code == 200
    bad = {
        "expired": craft_token(stack, user.id, iat=now - 1000, exp=now - 10),
        "forged": craft_token(stack, user.id, secret="not-the-secret-of-this-deployment-at-all"),
        "not an access token": craft_token(stack, user.id, typ="refresh"),
        "unknown user": craft_token(stack, uuid.uuid4()),
        "garbage": "eyJhbGciOi.not.a.jwt",
        "alg none": jwt.encode({"sub": str(user.id), "typ": "access", "exp": now + 600}, None, algorithm="none"),
    }
    for what, token in bad.items():
        resp = await anon.get("/v1/me", headers=bearer(token))
        assert resp.status_code == 401, what
        assert resp.json()["code"] == "invalid_token", what
        assert resp.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"', what


async def test_streaming_routes_take_the_access_token_in_the_query(stack: Stack, user: User) -> None:
    job_id, ws_base = uuid.uuid4(), stack.api_url.replace("http://", "ws://")
    valid, expired = craft_token(stack, user.id), craft_token(stack, user.id, exp=int(time.time()) - 10)
    async with httpx.AsyncClient(base_url=stack.api_url) as anon:
        resp = await anon.get(f"/v1/jobs/{job_id}/events", params={"access_token": valid})
        assert resp.status_code == 404  # authenticated; there is no such job
        resp = await anon.get(f"/v1/jobs/{job_id}/events", params={"access_token": expired})
        assert resp.status_code == 401 and resp.json()["code"] == "invalid_token"
    async with websockets.connect(f"{ws_base}/v1/events?access_token={expired}") as ws:
        assert json.loads(await ws.recv())["status"] == 401
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_a_disabled_user_is_refused_at_once(anon: httpx.AsyncClient, stack: Stack) -> None:
    email = await register(anon)
    pair = await tokens_for(anon, email)
    async with await psycopg.AsyncConnection.connect(stack.env["DATABASE_URL"], autocommit=True) as conn:
        await conn.execute("UPDATE users SET disabled_at = now()")
    resp = await anon.get("/v1/me", headers=bearer(pair["access_token"]))
    assert resp.status_code == 401 and resp.json()["code"] == "invalid_token"
    assert (await refresh(anon, pair["refresh_token"])).status_code == 401
    resp = await login(anon, email)
    assert resp.status_code == 403 and resp.json()["code"] == "account_disabled"


# --- API keys ----------------------------------------------------------------------------------------------------


async def test_api_keys_are_created_shown_once_listed_and_revoked(anon: httpx.AsyncClient) -> None:
    token = (await tokens_for(anon))["access_token"]
    resp = await anon.post("/v1/keys", json={"name": "laptop"}, headers=bearer(token))
    assert resp.status_code == 201, resp.text
    created = resp.json()
    secret = created["key"]
    assert secret.startswith(KEY_PREFIX) and created["prefix"] == secret[: len(KEY_PREFIX) + 4]
    assert (await anon.get("/v1/me", headers=bearer(secret))).json()["auth"] == "api_key"
    # A key holder may create keys too.
    assert (await anon.post("/v1/keys", json={"name": "ci"}, headers=bearer(secret))).status_code == 201

    listing = await anon.get("/v1/keys", headers=bearer(token))
    assert secret not in listing.text
    keys = {k["name"]: k for k in listing.json()["data"]}
    assert set(keys) == {"laptop", "ci"} and "key" not in keys["laptop"]
    assert keys["laptop"]["prefix"] == created["prefix"] and keys["laptop"]["last_used_at"] is not None

    assert (await anon.delete(f"/v1/keys/{created['id']}", headers=bearer(token))).status_code == 204
    resp = await anon.get("/v1/me", headers=bearer(secret))
    assert resp.status_code == 401 and resp.json()["code"] == "invalid_api_key"
    keys = {k["name"]: k for k in (await anon.get("/v1/keys", headers=bearer(token))).json()["data"]}
    assert keys["laptop"]["revoked_at"] is not None and keys["ci"]["revoked_at"] is None

    for body in ({"name": ""}, {"name": "x" * 101}, {"name": "ok", "scopes": ["all"]}):
        resp = await anon.post("/v1/keys", json=body, headers=bearer(token))
        assert resp.status_code == 400, body
    assert (await anon.post("/v1/keys", json={"name": "x"})).status_code == 401


async def test_revoked_key_is_refused_at_once_by_another_api_process(
    client: httpx.AsyncClient, stack: Stack, user: User
) -> None:
    port = free_port()
    api2 = start_api(stack.env, port, stack.log_dir, name="api-2")
    try:
        created = (await client.post("/v1/keys", json={"name": "shared"})).json()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30,
                                     headers=bearer(created["key"])) as second:
            assert (await second.get("/v1/me")).status_code == 200
            assert (await client.delete(f"/v1/keys/{created['id']}")).status_code == 204
            assert (await second.get("/v1/me")).status_code == 401
    finally:
        api2.stop()


async def test_another_users_key_is_404(client: httpx.AsyncClient, stack: Stack, user: User,
                                        other_user: User, servers: dict[str, str]) -> None:
    created = (await client.post("/v1/keys", json={"name": "mine"})).json()
    async with httpx.AsyncClient(base_url=stack.api_url, headers=bearer(other_user.key)) as other:
        resp = await other.delete(f"/v1/keys/{created['id']}")
        assert resp.status_code == 404 and resp.json()["code"] == "not_found"
        assert (await other.delete("/v1/keys/not-a-uuid")).status_code == 404
        assert created["id"] not in (await other.get("/v1/keys")).text
    assert (await client.get("/v1/me", headers=bearer(created["key"]))).status_code == 200
    admin = await make_user(servers["DATABASE_URL"], role="admin", credits=0)
    async with httpx.AsyncClient(base_url=stack.api_url, headers=bearer(admin.key)) as ops:
        assert (await ops.delete(f"/v1/keys/{created['id']}")).status_code == 204


# --- audit -------------------------------------------------------------------------------------------------------


async def test_audit_log_records_auth_events_without_secrets(anon: httpx.AsyncClient, stack: Stack) -> None:
    email = await register(anon)
    assert (await login(anon, email, "wrong password")).status_code == 401
    pair = await tokens_for(anon, email)
    created = (await anon.post("/v1/keys", json={"name": "audited"}, headers=bearer(pair["access_token"]))).json()
    resp = await anon.delete(f"/v1/keys/{created['id']}", headers=bearer(pair["access_token"]))
    assert resp.status_code == 204
    assert (await anon.post("/v1/auth/logout", json={"refresh_token": pair["refresh_token"]})).status_code == 204

    async with await psycopg.AsyncConnection.connect(stack.env["DATABASE_URL"], autocommit=True) as conn:
        cur = await conn.execute("SELECT action, actor_id::text, ip, details::text FROM audit_log ORDER BY id")
        rows = await cur.fetchall()
    actions = [r[0] for r in rows]
    assert actions == ["user.register", "auth.login_failed", "auth.login", "key.create", "key.revoke",
                       "auth.logout"]
    me = (await anon.get("/v1/me", headers=bearer(pair["access_token"]))).json()
    assert {r[1] for r in rows} == {me["id"]}
    assert {r[2] for r in rows} == {"127.0.0.1"}
    dump = repr(rows)
    for secret in (PASSWORD, "wrong password", created["key"], pair["refresh_token"], pair["access_token"]):
        assert secret not in dump
    assert created["prefix"] in dump
