"""Payment webhooks over real HTTP: signed events top up credits once, anything else credits nothing.

Signatures are computed here from the providers' documented schemes (not with
jobs/payments.py), so a verifier that drifts from Stripe or Razorpay fails.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from scripts.embedded import free_port
from scripts.procs import start_api
from tests.conftest import Stack, User, make_user

STRIPE_SECRET = "whsec_test"
RAZORPAY_SECRET = "rzp_test_secret"
START = 1_000  # credits every user here starts with


def stripe_event(user_id: Any, *, payment_id: str | None = None, amount: int = 500, credits: int | None = None,
                 kind: str = "payment_intent.succeeded") -> bytes:
    """A Stripe `payment_intent.succeeded` event body, laid out as Stripe sends it."""
    metadata = {"user_id": str(user_id)} | ({"credits": str(credits)} if credits is not None else {})
    event = {
        "id": f"evt_{uuid.uuid4().hex[:24]}", "object": "event", "api_version": "2024-06-20", "type": kind,
        "created": int(time.time()), "livemode": False,
        "data": {"object": {"id": payment_id or f"pi_{uuid.uuid4().hex[:24]}", "object": "payment_intent",
                            "amount": amount, "amount_received": amount, "currency": "usd",
                            "status": "succeeded", "metadata": metadata}},
    }
    return json.dumps(event, indent=2).encode()  # Stripe pretty-prints: bytes must be verified as sent


def stripe_headers(body: bytes, *, secret: str = STRIPE_SECRET, t: int | None = None) -> dict[str, str]:
    t = int(time.time()) if t is None else t
    sig = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={t},v1={sig}", "Content-Type": "application/json"}


def razorpay_event(user_id: Any, *, payment_id: str | None = None, amount: int = 1000,
                   credits: int | None = None) -> bytes:
    notes = {"user_id": str(user_id)} | ({"credits": str(credits)} if credits is not None else {})
    event = {
        "entity": "event", "account_id": "acc_test", "event": "payment.captured", "contains": ["payment"],
        "payload": {"payment": {"entity": {"id": payment_id or f"pay_{uuid.uuid4().hex[:14]}", "entity": "payment",
                                           "amount": amount, "currency": "INR", "status": "captured",
                                           "notes": notes}}},
        "created_at": int(time.time()),
    }
    return json.dumps(event, separators=(",", ":")).encode()


def razorpay_headers(body: bytes, secret: str = RAZORPAY_SECRET) -> dict[str, str]:
    sig = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Razorpay-Signature": sig, "Content-Type": "application/json"}


def ledger(stack: Stack, user: User, kind: str) -> list[tuple[int, str | None]]:
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        rows = conn.execute("SELECT amount, reference FROM credit_ledger WHERE user_id = %s AND kind = %s",
                            (user.id, kind)).fetchall()
    return [(r[0], r[1]) for r in rows]


def audit_rows(stack: Stack, action: str) -> list[dict[str, Any]]:
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        rows = conn.execute("SELECT target, details FROM audit_log WHERE action = %s", (action,)).fetchall()
    return [{"target": r[0], **(r[1] or {})} for r in rows]


async def balance(stack: Stack, user: User) -> int:
    async with httpx.AsyncClient(base_url=stack.api_url, headers={"Authorization": f"Bearer {user.key}"}) as c:
        resp = await c.get("/v1/credits")
        assert resp.status_code == 200, resp.text
        return int(resp.json()["balance"])


async def wait_balance(stack: Stack, user: User, expected: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while (current := await balance(stack, user)) != expected:
        assert current < expected, f"over-credited: {current} > {expected}"
        assert time.monotonic() < deadline, f"balance stuck at {current}, expected {expected}"
        await asyncio.sleep(0.05)


async def settle_then_balance(stack: Stack, user: User, pause: float = 1.5) -> int:
    """The balance after the worker had time to do anything it was (wrongly) asked to."""
    await asyncio.sleep(pause)
    return await balance(stack, user)


@pytest.fixture
async def payer(stack: Stack) -> User:
    return await make_user(stack.env["DATABASE_URL"], credits=START)


@pytest.fixture
async def hook(stack: Stack) -> Any:
    async with httpx.AsyncClient(base_url=stack.api_url + "/v1/billing/webhooks", timeout=30) as c:
        yield c


async def test_signed_stripe_payment_credits_the_user_once(stack: Stack, payer: User, hook: httpx.AsyncClient) -> None:
    pi = f"pi_{uuid.uuid4().hex[:24]}"
    body = stripe_event(payer.id, payment_id=pi, amount=250)  # $2.50 at 100 credits per cent
    resp = await hook.post("/stripe", content=body, headers=stripe_headers(body))
    assert resp.status_code == 200, resp.text
    ack = resp.json()
    assert ack["received"] is True and ack["job_id"]
    await wait_balance(stack, payer, START + 25_000)
    assert ledger(stack, payer, "topup") == [(25_000, f"stripe:{pi}")]
    async with httpx.AsyncClient(base_url=stack.api_url, headers={"Authorization": f"Bearer {payer.key}"}) as c:
        job = (await c.get(f"/v1/jobs/{ack['job_id']}")).json()
    assert job["kind"] == "billing.topup" and job["queue"] == "billing"
    assert job["status"] == "succeeded"
    assert job["result"] == {"credited": 25_000, "balance": START + 25_000, "duplicate": False}
    assert job["input"]["payment_id"] == f"stripe:{pi}"
    [row] = audit_rows(stack, "billing.topup")
    assert row["target"] == str(payer.id) and row["payment_id"] == f"stripe:{pi}"


async def test_metadata_credits_override_the_amount(stack: Stack, payer: User, hook: httpx.AsyncClient) -> None:
    body = stripe_event(payer.id, amount=999, credits=42)
    assert (await hook.post("/stripe", content=body, headers=stripe_headers(body))).status_code == 200
    await wait_balance(stack, payer, START + 42)


async def test_same_event_twice_and_five_concurrent_credit_once(
    stack: Stack, payer: User, hook: httpx.AsyncClient
) -> None:
    body = stripe_event(payer.id, amount=10)
    first = await hook.post("/stripe", content=body, headers=stripe_headers(body))
    await wait_balance(stack, payer, START + 1_000)
    second = await hook.post("/stripe", content=body, headers=stripe_headers(body))
    assert second.status_code == 200 and second.json()["job_id"] == first.json()["job_id"]

    other = stripe_event(payer.id, amount=7)
    burst = await asyncio.gather(*[hook.post("/stripe", content=other, headers=stripe_headers(other))
                                   for _ in range(5)])
    assert {r.status_code for r in burst} == {200}
    assert len({r.json()["job_id"] for r in burst}) == 1
    await wait_balance(stack, payer, START + 1_000 + 700)
    assert await settle_then_balance(stack, payer) == START + 1_700
    assert len(ledger(stack, payer, "topup")) == 2


async def test_checkout_session_and_its_payment_intent_credit_once(
    stack: Stack, payer: User, hook: httpx.AsyncClient
) -> None:
    pi = f"pi_{uuid.uuid4().hex[:24]}"
    session = {"id": "evt_1", "type": "checkout.session.completed", "data": {"object": {
        "id": f"cs_test_{uuid.uuid4().hex}", "object": "checkout.session", "amount_total": 300, "currency": "usd",
        "payment_intent": pi, "payment_status": "paid", "metadata": {"user_id": str(payer.id)}}}}
    for body in (json.dumps(session).encode(), stripe_event(payer.id, payment_id=pi, amount=300)):
        resp = await hook.post("/stripe", content=body, headers=stripe_headers(body))
        assert resp.status_code == 200 and "job_id" in resp.json(), resp.text
    await wait_balance(stack, payer, START + 30_000)
    assert await settle_then_balance(stack, payer) == START + 30_000
    assert ledger(stack, payer, "topup") == [(30_000, f"stripe:{pi}")]


async def test_bad_signature_is_400_and_credits_nothing(stack: Stack, payer: User, hook: httpx.AsyncClient) -> None:
    body = stripe_event(payer.id, amount=100)
    forged = stripe_headers(body, secret="whsec_attacker")
    tampered = stripe_headers(body)
    cases = {
        "wrong secret": (body, forged),
        "tampered body": (body.replace(b'"amount": 100', b'"amount": 999'), tampered),
        "missing header": (body, {"Content-Type": "application/json"}),
        "garbage header": (body, {"Stripe-Signature": "nonsense"}),
    }
    assert cases["tampered body"][0] != body
    for name, (content, headers) in cases.items():
        resp = await hook.post("/stripe", content=content, headers=headers)
        assert resp.status_code == 400, (name, resp.text)
        assert resp.json()["code"] == "invalid_signature", name
        assert resp.headers["content-type"].startswith("application/problem+json")
    assert await settle_then_balance(stack, payer) == START
    assert ledger(stack, payer, "topup") == []


async def test_stale_or_future_timestamp_is_400(stack: Stack, payer: User, hook: httpx.AsyncClient) -> None:
    body = stripe_event(payer.id, amount=100)
    tolerance = stack.settings.stripe_tolerance_seconds
    for t in (int(time.time()) - tolerance - 60, int(time.time()) + tolerance + 60):
        resp = await hook.post("/stripe", content=body, headers=stripe_headers(body, t=t))
        assert resp.status_code == 400 and resp.json()["code"] == "invalid_signature", resp.text
        assert "tolerance" in resp.json()["detail"]
    # The same body signed now is fine: the refusal was the timestamp, not the body.
    assert (await hook.post("/stripe", content=body, headers=stripe_headers(body))).status_code == 200
    await wait_balance(stack, payer, START + 10_000)


async def test_one_of_several_v1_signatures_is_enough(stack: Stack, payer: User, hook: httpx.AsyncClient) -> None:
    body = stripe_event(payer.id, amount=1)
    good = stripe_headers(body)["Stripe-Signature"]
    t, v1 = good.split(",")
    headers = {"Stripe-Signature": f"{t},v1={'0' * 64},{v1},v0=abc"}
    assert (await hook.post("/stripe", content=body, headers=headers)).status_code == 200
    await wait_balance(stack, payer, START + 100)


async def test_razorpay_signed_payment_credits_once_and_bad_signature_is_400(
    stack: Stack, payer: User, hook: httpx.AsyncClient
) -> None:
    pay = f"pay_{uuid.uuid4().hex[:14]}"
    body = razorpay_event(payer.id, payment_id=pay, amount=1000, credits=5_000)
    bad = await hook.post("/razorpay", content=body, headers=razorpay_headers(body, "not-the-secret"))
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_signature"
    missing = await hook.post("/razorpay", content=body)
    assert missing.status_code == 400 and missing.json()["code"] == "invalid_signature"
    assert await settle_then_balance(stack, payer, pause=1) == START

    for _ in range(2):
        resp = await hook.post("/razorpay", content=body, headers=razorpay_headers(body))
        assert resp.status_code == 200 and resp.json()["job_id"], resp.text
    await wait_balance(stack, payer, START + 5_000)
    assert await settle_then_balance(stack, payer) == START + 5_000
    assert ledger(stack, payer, "topup") == [(5_000, f"razorpay:{pay}")]


async def test_razorpay_amount_and_empty_notes_list(stack: Stack, payer: User, hook: httpx.AsyncClient) -> None:
    body = razorpay_event(payer.id, amount=3)  # 3 paise at 100 credits each
    assert (await hook.post("/razorpay", content=body, headers=razorpay_headers(body))).status_code == 200
    await wait_balance(stack, payer, START + 300)
    # Razorpay sends `"notes": []` when there are none: no user, acknowledged and ignored.
    noteless = body.replace(b'"notes":{"user_id":"' + str(payer.id).encode() + b'"}', b'"notes":[]')
    assert b'"notes":[]' in noteless
    resp = await hook.post("/razorpay", content=noteless, headers=razorpay_headers(noteless))
    assert resp.status_code == 200 and resp.json() == {"received": True, "ignored": "unknown user"}


async def test_unknown_user_is_acknowledged_ignored_and_audited(stack: Stack, hook: httpx.AsyncClient) -> None:
    ghost = uuid.uuid4()
    body = stripe_event(ghost, amount=100)
    resp = await hook.post("/stripe", content=body, headers=stripe_headers(body))
    assert resp.status_code == 200
    assert resp.json() == {"received": True, "ignored": "unknown user"}
    [row] = audit_rows(stack, "billing.webhook_ignored")
    assert row["target"] == str(ghost) and row["reason"] == "unknown user" and row["provider"] == "stripe"
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (0,)


async def test_unsupported_event_type_is_acknowledged_and_ignored(
    stack: Stack, payer: User, hook: httpx.AsyncClient
) -> None:
    body = stripe_event(payer.id, kind="customer.created")
    resp = await hook.post("/stripe", content=body, headers=stripe_headers(body))
    assert resp.status_code == 200
    assert resp.json() == {"received": True, "ignored": "customer.created"}
    unpaid = json.dumps({"type": "checkout.session.completed", "data": {"object": {
        "id": "cs_x", "amount_total": 100, "payment_status": "unpaid", "metadata": {"user_id": str(payer.id)}}}})
    resp = await hook.post("/stripe", content=unpaid, headers=stripe_headers(unpaid.encode()))
    assert resp.json() == {"received": True, "ignored": "payment_status unpaid"}
    assert await settle_then_balance(stack, payer, pause=1) == START


async def test_signed_garbage_is_400_and_unknown_provider_404(stack: Stack, hook: httpx.AsyncClient) -> None:
    body = b'{"type": "payment_intent.succeeded", "data": {"object": {"amount_received": "lots"}}}'
    resp = await hook.post("/stripe", content=body, headers=stripe_headers(body))
    assert resp.status_code == 400 and resp.json()["code"] == "invalid_payload"
    resp = await hook.post("/paypal", content=b"{}")
    assert resp.status_code == 404 and resp.json()["code"] == "unknown_provider"


@pytest.fixture(scope="module")
def unconfigured_api(stack: Stack) -> Iterator[str]:
    env = {k: v for k, v in stack.env.items() if k not in ("STRIPE_WEBHOOK_SECRET", "RAZORPAY_WEBHOOK_SECRET")}
    port = free_port()
    proc = start_api(env, port, stack.log_dir, name="api-no-webhooks")
    yield f"http://127.0.0.1:{port}"
    proc.stop()


async def test_unconfigured_secret_is_503(stack: Stack, payer: User, unconfigured_api: str) -> None:
    body = stripe_event(payer.id, amount=100)
    async with httpx.AsyncClient(base_url=unconfigured_api) as c:
        for path, headers in (("stripe", stripe_headers(body)), ("razorpay", razorpay_headers(body))):
            resp = await c.post(f"/v1/billing/webhooks/{path}", content=body, headers=headers)
            assert resp.status_code == 503, resp.text
            assert resp.json()["code"] == "webhook_not_configured"
    assert await settle_then_balance(stack, payer, pause=0.5) == START


async def test_second_job_for_the_same_payment_credits_nothing(
    stack: Stack, payer: User, hook: httpx.AsyncClient
) -> None:
    # The payer spent the payment id as an Idempotency-Key of their own first: each delivery then
    # makes a job of its own, and the ledger reference is what keeps the credit single.
    pi = f"pi_{uuid.uuid4().hex[:24]}"
    async with httpx.AsyncClient(base_url=stack.api_url, headers={"Authorization": f"Bearer {payer.key}"}) as c:
        chat = await c.post("/v1/jobs", json={"kind": "chat.completion", "input": {
            "model": "sim-small", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}},
            headers={"Idempotency-Key": f"stripe:{pi}"})
        assert chat.status_code == 202, chat.text
        body = stripe_event(payer.id, payment_id=pi, credits=900)
        acks = [(await hook.post("/stripe", content=body, headers=stripe_headers(body))).json() for _ in range(2)]
        assert len({a["job_id"] for a in acks} | {chat.json()["id"]}) == 3
        results = []
        for ack in acks:
            while (job := (await c.get(f"/v1/jobs/{ack['job_id']}")).json())["status"] != "succeeded":
                assert job["status"] in ("queued", "running"), job
                await asyncio.sleep(0.05)
            results.append(job["result"])
    assert sorted(r["duplicate"] for r in results) == [False, True]
    assert sorted(r["credited"] for r in results) == [0, 900]
    assert ledger(stack, payer, "topup") == [(900, f"stripe:{pi}")]
