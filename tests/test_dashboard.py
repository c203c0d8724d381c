"""The operator dashboard (`/admin`) over real HTTP, and in a real headless browser (Debian's chromium + Selenium).

Everything runs against the session's API, worker pools and maintenance loop.
The browser test saves screenshots under its tmp dir (`pytest --basetemp=DIR`
keeps them somewhere known): login.png, queues-draining.png, queues-drained.png,
dead-letters-before.png, dead-letters-after.png, job.png, workers.png.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import dramatiq
import httpx
import psycopg
import pytest
import redis

from jobs import store
from jobs.accounts import set_password_hash
from jobs.db import open_pool
from jobs.ids import uuid7
from jobs.passwords import hash_password
from tests.conftest import Stack, User, chat_job, make_user, wait_for_status

NS = "switchyard"
PASSWORD = "a long operator password"
CSRF_COOKIE = "sy_admin_csrf"
SESSION_COOKIE = "sy_admin_session"
HTMX = {"HX-Request": "true"}
#: A target of tests/routes.toml that no other test forces; every test that forces it hands it back (`auto`).
TARGET = "sim:cb-backup"

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


#: Failed logins all come from 127.0.0.1: every test starts unlocked and leaves none behind.
pytestmark = pytest.mark.usefixtures("no_lockouts")


async def make_operator(stack: Stack, role: str = "admin") -> User:
    """A user with `role`, an API key and a password."""
    account = await make_user(stack.env["DATABASE_URL"], role=role)
    async with await psycopg.AsyncConnection.connect(stack.env["DATABASE_URL"], autocommit=True) as conn:
        await set_password_hash(conn, account.id, await hash_password(PASSWORD))
    return account


@pytest.fixture
async def admin(stack: Stack) -> User:
    return await make_operator(stack)


@pytest.fixture
async def browser_client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """A cookie-keeping client that does not follow redirects (a browser without JavaScript)."""
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as c:
        yield c


def csrf(c: httpx.AsyncClient) -> str:
    token = c.cookies.get(CSRF_COOKIE)
    assert token, "GET /admin/login first: it sets the CSRF cookie"
    return token


async def log_in(c: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    """The login form, as a browser submits it."""
    form = await c.get("/admin/login")
    assert form.status_code == 200, form.text
    return await c.post("/admin/login", data={"email": email, "password": password, "_csrf_token": csrf(c)})


async def act(c: httpx.AsyncClient, path: str, **data: Any) -> httpx.Response:
    """An action as htmx posts it: the form fields, and the CSRF token in a header."""
    return await c.post(path, data=data, headers={**HTMX, "X-CSRFToken": csrf(c)})


def audit_rows(stack: Stack, action: str) -> list[tuple[Any, str | None, dict[str, Any] | None]]:
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        rows = conn.execute("SELECT actor_id, target, details FROM audit_log WHERE action = %s ORDER BY id",
                            (action,)).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def set_cookie(resp: httpx.Response, name: str) -> str:
    """The response's Set-Cookie of `name`, lower-cased (attribute values are case-insensitive)."""
    return next(h for h in resp.headers.get_list("set-cookie") if h.startswith(f"{name}=")).lower()


@pytest.fixture
def dead_letters(stack: Stack, redis_client: redis.Redis) -> Iterator[Callable[..., Any]]:
    """Makes held dead letters of `chat`; whatever the test leaves of them is removed afterwards."""
    made: list[str] = []

    async def make(owner: User, content: str) -> uuid.UUID:
        """A dead letter whose job is still `queued`, as Dramatiq leaves one after its last retry.

        The session holds dead letters for only 1 s (SWITCHYARD_DEAD_LETTER_HOLD_SECONDS) before the
        maintenance loop fails their jobs, after which a requeue would find the job finished and do
        nothing; the letter is dated 10 minutes ahead so that its hold has not run out when we act on it.
        The message goes in before the row exists, so the reconciler never takes the job for lost.
        """
        job_id = uuid7()
        message = dramatiq.Message(
            queue_name="chat", actor_name="run_job:chat", args=(str(job_id),), kwargs={}, message_id=str(job_id),
            options={"redis_message_id": str(job_id), "retries": 1,
                     "traceback": "Traceback (most recent call last):\nRuntimeError: chaos: infrastructure error"})
        redis_client.hset(f"{NS}:chat.XQ.msgs", str(job_id), message.encode())
        redis_client.zadd(f"{NS}:chat.XQ", {str(job_id): int(time.time() * 1000) + 600_000})
        made.append(str(job_id))
        pool = await open_pool(stack.env["DATABASE_URL"])
        try:
            async with pool.connection() as conn:
                await store.insert_job(
                    conn, job_id=job_id, owner_id=owner.id, kind="chat.completion", queue="chat",
                    input={"model": "sim-small", "messages": [{"role": "user", "content": content}]},
                    metadata=None, idempotency_key=None, request_hash=None,
                )
        finally:
            await pool.close()
        return job_id

    yield make
    if made:
        redis_client.zrem(f"{NS}:chat.XQ", *made)
        redis_client.hdel(f"{NS}:chat.XQ.msgs", *made)


# --- HTTP: the session, the guard, CSRF -------------------------------------------------------------------------


async def test_pages_send_the_browser_to_the_login_without_a_session(browser_client: httpx.AsyncClient) -> None:
    first = await browser_client.get("/admin/login")
    # The CSRF cookie comes with the first page the browser gets under /admin.
    cookie = set_cookie(first, CSRF_COOKIE)
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/admin" in cookie
    assert f'value="{csrf(browser_client)}"' in first.text  # the form's twin of the cookie
    for path in ("/admin", "/admin/queues", "/admin/jobs?status=failed", "/admin/dead-letters", "/admin/users",
                 "/admin/queues/stream"):
        resp = await browser_client.get(path)
        assert resp.status_code == 303, (path, resp.status_code)
        assert resp.headers["location"].startswith("/admin/login?next=%2Fadmin"), resp.headers["location"]
    hx = await browser_client.get("/admin/queues", headers=HTMX)
    assert hx.status_code == 401 and hx.headers["hx-redirect"] == "/admin/login"
    events = await browser_client.get("/admin/queues/stream", headers={"Accept": "text/event-stream"})
    assert events.status_code == 401  # an EventSource stops on a 4xx

    page = await browser_client.get("/admin/login", params={"next": "/admin/jobs"})
    assert page.status_code == 200 and "Operator login" in page.text
    assert 'name="next" value="/admin/jobs"' in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    # Elsewhere is not a place to return to.
    off_site = await browser_client.get("/admin/login", params={"next": "//evil.example/admin"})
    assert 'name="next" value="/admin"' in off_site.text
    # The assets the login page needs are served without a session, from the app itself.
    for asset in ("htmx.min.js", "htmx-sse.min.js", "dashboard.css"):
        assert (await browser_client.get(f"/admin/static/{asset}")).status_code == 200, asset


async def test_an_admin_logs_in_and_out_with_a_strict_session_cookie(
    browser_client: httpx.AsyncClient, stack: Stack, admin: User
) -> None:
    resp = await log_in(browser_client, admin.email)
    assert resp.status_code == 303 and resp.headers["location"] == "/admin"
    cookie = set_cookie(resp, SESSION_COOKIE)
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/admin" in cookie
    assert re.search(r"max-age=28800\b", cookie), cookie
    [(actor, target, _)] = audit_rows(stack, "admin.login")
    assert actor == admin.id and target == f"user:{admin.id}"

    home = await browser_client.get("/admin", follow_redirects=True)
    assert home.status_code == 200 and str(home.url).endswith("/admin/queues")
    assert 'sse-connect="/admin/queues/stream"' in home.text and 'data-queue="chat"' in home.text
    assert admin.email in home.text
    for path in ("/admin/workers", "/admin/jobs", "/admin/dead-letters?queue=chat", "/admin/providers",
                 "/admin/users", "/admin/audit"):
        assert (await browser_client.get(path)).status_code == 200, path

    # The session is no API credential (and an API token is no session).
    session_token = browser_client.cookies.get(SESSION_COOKIE)
    me = await browser_client.get("/v1/me", headers={"Authorization": f"Bearer {session_token}"})
    assert me.status_code == 401
    api_token = (await browser_client.post("/v1/auth/login", json={"email": admin.email, "password": PASSWORD})
                 ).json()["access_token"]
    async with httpx.AsyncClient(base_url=stack.api_url, cookies={SESSION_COOKIE: api_token}) as forged:
        assert (await forged.get("/admin/queues")).status_code == 303

    out = await browser_client.post("/admin/logout", data={"_csrf_token": csrf(browser_client)})
    assert out.status_code == 303 and out.headers["location"] == "/admin/login"
    assert re.search(r"max-age=0\b", set_cookie(out, SESSION_COOKIE))
    assert [a for a, _, _ in audit_rows(stack, "admin.logout")] == [admin.id]
    assert (await browser_client.get("/admin/queues")).status_code == 303
    # A copy of the logged-out cookie is refused too: the session was revoked, not just forgotten.
    async with httpx.AsyncClient(base_url=stack.api_url, cookies={SESSION_COOKIE: str(session_token)}) as copied:
        assert (await copied.get("/admin/queues")).status_code == 303


async def test_login_refuses_users_wrong_passwords_and_locked_accounts(
    browser_client: httpx.AsyncClient, stack: Stack, admin: User
) -> None:
    plain = await make_operator(stack, role="user")
    refused = await log_in(browser_client, plain.email)
    assert refused.status_code == 403 and "for admins only" in refused.text
    assert SESSION_COOKIE not in browser_client.cookies

    wrong = await log_in(browser_client, admin.email, "not the password")
    assert wrong.status_code == 401 and "wrong email or password" in wrong.text
    failures = {(actor, details["reason"]) for actor, _, details in audit_rows(stack, "admin.login_failed")
                if details}
    assert failures == {(plain.id, "not_admin"), (None, "invalid_credentials")}
    assert audit_rows(stack, "admin.login") == []

    # The API's lockout, shared: the account's remaining failures lock it even for the right password.
    for _ in range(stack.settings.login_max_failures_per_account - 1):
        assert (await log_in(browser_client, admin.email, "still wrong")).status_code == 401
    locked = await log_in(browser_client, admin.email)
    assert locked.status_code == 429 and "too many failed logins" in locked.text
    assert 0 < int(locked.headers["retry-after"]) <= stack.settings.login_lockout_seconds


async def test_a_demoted_admin_is_refused_at_once(browser_client: httpx.AsyncClient, stack: Stack,
                                                  admin: User) -> None:
    assert (await log_in(browser_client, admin.email)).status_code == 303
    assert (await browser_client.get("/admin/queues")).status_code == 200
    with psycopg.connect(stack.env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("UPDATE users SET role = 'user' WHERE id = %s", (admin.id,))
    assert (await browser_client.get("/admin/queues")).headers["location"].startswith("/admin/login")
    hx = await act(browser_client, "/admin/dead-letters/requeue", queue="chat")
    assert hx.status_code == 403 and hx.headers["hx-redirect"] == "/admin/login"
    assert audit_rows(stack, "admin.requeue") == []


async def test_form_posts_need_the_csrf_token_but_the_json_api_does_not(
    browser_client: httpx.AsyncClient, stack: Stack, admin: User
) -> None:
    await browser_client.get("/admin/login")
    no_token = await browser_client.post("/admin/login", data={"email": admin.email, "password": PASSWORD})
    assert no_token.status_code == 403 and "security token" in no_token.text
    forged = await browser_client.post("/admin/login", data={"email": admin.email, "password": PASSWORD,
                                                             "_csrf_token": "0" * 128})
    assert forged.status_code == 403
    assert audit_rows(stack, "admin.login") == []  # refused before the password was looked at

    assert (await log_in(browser_client, admin.email)).status_code == 303
    for headers in ({}, HTMX, {**HTMX, "X-CSRFToken": "bogus"}):
        resp = await browser_client.post("/admin/dead-letters/requeue", data={"queue": "chat"}, headers=headers)
        assert resp.status_code == 403, (headers, resp.text)
    assert audit_rows(stack, "admin.requeue") == []
    assert (await act(browser_client, "/admin/dead-letters/requeue", queue="chat")).status_code == 200

    # Bearer-token routes, whatever the path, never ask for a CSRF token.
    async with httpx.AsyncClient(base_url=stack.api_url, headers={"Authorization": f"Bearer {admin.key}"}) as api:
        assert (await api.post("/v1/admin/queues/chat/requeue-dead")).status_code == 200
        assert (await api.post("/v1/jobs", json=chat_job("no csrf here"))).status_code == 202


# --- HTTP: the actions, each audited ----------------------------------------------------------------------------


async def test_requeue_and_purge_dead_letters_are_audited(
    browser_client: httpx.AsyncClient, client: httpx.AsyncClient, stack: Stack, admin: User, user: User,
    dead_letters: Callable[..., Any],
) -> None:
    keep, drop = await dead_letters(user, "requeue me"), await dead_letters(user, "purge me")
    assert (await log_in(browser_client, admin.email)).status_code == 303
    page = await browser_client.get("/admin/dead-letters", params={"queue": "chat"})
    assert f'data-message="{keep}"' in page.text and f'data-message="{drop}"' in page.text
    assert "RuntimeError: chaos: infrastructure error" in page.text

    requeued = await act(browser_client, "/admin/dead-letters/requeue", queue="chat", message_id=str(keep))
    assert requeued.status_code == 200, requeued.text
    assert 'id="flash" hx-swap-oob="true"' in requeued.text and "Requeued 1 dead letter(s) of chat" in requeued.text
    assert f'data-message="{keep}"' not in requeued.text and f'data-message="{drop}"' in requeued.text
    assert (await wait_for_status(client, str(keep)))["status"] == "succeeded"

    purged = await act(browser_client, "/admin/dead-letters/purge", queue="chat", message_id=str(drop))
    assert purged.status_code == 200 and "Purged 1 dead letter(s) of chat; 1 job(s) failed" in purged.text
    failed = await wait_for_status(client, str(drop))
    assert failed["status"] == "failed" and failed["error"]["code"] == "delivery_failed"

    [(actor, target, details)] = audit_rows(stack, "admin.requeue")
    assert actor == admin.id and target == "chat" and details and details["message_ids"] == [str(keep)]
    [(actor, target, details)] = audit_rows(stack, "admin.purge")
    assert actor == admin.id and target == "chat" and details and details["jobs_failed"] == 1

    # A letter that is gone: the error comes back as the flash, not as a page.
    gone = await act(browser_client, "/admin/dead-letters/requeue", queue="chat", message_id=str(keep))
    assert gone.status_code == 404 and gone.headers["hx-retarget"] == "#flash"
    assert "dead_letter_not_found" in gone.text
    # Without htmx, a plain form post goes back to the page.
    plain = await browser_client.post("/admin/dead-letters/requeue", data={"queue": "chat",
                                                                           "_csrf_token": csrf(browser_client)})
    assert plain.status_code == 303 and plain.headers["location"] == "/admin/dead-letters?queue=chat"


async def test_forcing_a_circuit_is_audited(browser_client: httpx.AsyncClient, stack: Stack, admin: User) -> None:
    assert (await log_in(browser_client, admin.email)).status_code == 303
    try:
        opened = await act(browser_client, "/admin/providers/circuit", target=TARGET, state="open",
                           reason="maintenance")
        assert opened.status_code == 200, opened.text
        assert f"{TARGET}: circuit open (now forced_open)" in opened.text
        page = await browser_client.get("/admin/providers")
        assert re.search(rf'data-target="{TARGET}">.*?data-field="state">forced_open<', page.text, re.S)
        unknown = await act(browser_client, "/admin/providers/circuit", target="sim:nope", state="open")
        assert unknown.status_code == 404 and "target_not_found" in unknown.text
    finally:
        auto = await act(browser_client, "/admin/providers/circuit", target=TARGET, state="auto")
    assert auto.status_code == 200 and "(now closed)" in auto.text
    rows = audit_rows(stack, "admin.circuit")
    assert [(a, t, d["state"] if d else None) for a, t, d in rows] == [(admin.id, TARGET, "open"),
                                                                       (admin.id, TARGET, "auto")]
    assert rows[0][2] and rows[0][2]["reason"] == "maintenance"


async def test_granting_credits_is_audited_and_granted_once_per_form(
    browser_client: httpx.AsyncClient, stack: Stack, admin: User
) -> None:
    target = await make_user(stack.env["DATABASE_URL"], credits=0)
    assert (await log_in(browser_client, admin.email)).status_code == 303
    page = await browser_client.get("/admin/users", params={"email": target.email})
    assert f'data-user="{target.id}"' in page.text
    key = re.search(r'name="idempotency_key" value="([^"]+)"', page.text)
    assert key
    form = {"user_id": str(target.id), "credits": "1500", "reason": "goodwill", "idempotency_key": key[1],
            "email": target.email}
    first = await act(browser_client, "/admin/users/grant", **form)
    assert first.status_code == 200 and "Granting 1500 credits" in first.text, first.text
    assert key[1] not in first.text  # the form comes back with a fresh key for the next grant
    again = await act(browser_client, "/admin/users/grant", **form)  # a double click
    assert again.status_code == 200 and "Already granting 1500 credits" in again.text
    bad = await act(browser_client, "/admin/users/grant", **{**form, "credits": "0"})
    assert bad.status_code == 400 and "validation_error" in bad.text

    async with httpx.AsyncClient(base_url=stack.api_url, headers={"Authorization": f"Bearer {target.key}"}) as c:
        deadline = time.monotonic() + 20
        while (await c.get("/v1/credits")).json()["balance"] != 1500:
            assert time.monotonic() < deadline, "the grant never landed"
            await asyncio.sleep(0.1)
    [(actor, audited, details)] = audit_rows(stack, "admin.grant")
    assert actor == admin.id and audited == str(target.id) and details and details["credits"] == 1500
    users = await browser_client.get("/admin/users", params={"email": target.email})
    assert re.search(r'data-field="balance">1,500<', users.text)


async def test_jobs_page_filters_and_a_job_page_shows_attempts_and_events(
    browser_client: httpx.AsyncClient, client: httpx.AsyncClient, admin: User, user: User
) -> None:
    job = (await client.post("/v1/jobs", json=chat_job("show me on the dashboard"))).json()
    assert (await wait_for_status(client, job["id"]))["status"] == "succeeded"
    assert (await log_in(browser_client, admin.email)).status_code == 303

    listed = await browser_client.get("/admin/jobs", params={"status": "succeeded", "kind": "", "queue": "chat",
                                                             "user_id": str(user.id)})
    assert listed.status_code == 200 and f'data-job="{job["id"]}"' in listed.text
    none = await browser_client.get("/admin/jobs", params={"status": "failed"})
    assert f'data-job="{job["id"]}"' not in none.text and "No jobs match" in none.text
    bad = await browser_client.get("/admin/jobs", params={"status": "exploded"})
    assert bad.status_code == 422 and "unknown status" in bad.text

    page = await browser_client.get(f"/admin/jobs/{job['id']}")
    assert page.status_code == 200
    assert 'id="job-status">succeeded<' in page.text and "sim-small" in page.text
    assert 'data-event="queued"' in page.text and 'data-event="succeeded"' in page.text
    replay = await browser_client.get(f"/admin/jobs/{job['id']}/events", headers=HTMX)
    assert replay.text.lstrip().startswith('<section id="events">') and 'data-event="succeeded"' in replay.text
    assert (await browser_client.get(f"/admin/jobs/{uuid.uuid4()}")).status_code == 404


async def test_the_queue_stream_sends_the_rendered_table(browser_client: httpx.AsyncClient, admin: User) -> None:
    assert (await log_in(browser_client, admin.email)).status_code == 303
    frames: list[str] = []
    async with browser_client.stream("GET", "/admin/queues/stream") as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        started = time.monotonic()
        async for line in resp.aiter_lines():
            if line.startswith("event: "):
                frames.append(line)
            if len(frames) == 2:
                break
    assert frames == ["event: queues", "event: queues"]
    assert 0.5 < time.monotonic() - started < 5  # about one a second


# --- A real browser -----------------------------------------------------------------------------------------------


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless chromium driven by chromedriver, both Debian's (`scripts/browser` installs them): nothing is
    downloaded at run time — with both paths given, Selenium Manager is never consulted."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()) and os.geteuid() != 0:
        pytest.skip("needs /usr/bin/chromium and /usr/bin/chromedriver (Debian: apt-get install chromium "
                    "chromium-driver, or run ./scripts/browser as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1440,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `check` (blocking: the browser is the only thing we wait on) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if result := check():
                return result
        except Exception:  # a cell swapped out between finding and reading it
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.timeout(300)
async def test_in_a_browser_an_operator_watches_a_queue_drain_and_requeues_a_dead_letter(
    browser: Any, tmp_path: Path, stack: Stack, admin: User, user: User, client: httpx.AsyncClient,
    dead_letters: Callable[..., Any],
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    def text_of(selector: str) -> str:
        """The element's text, read in one step in the page: htmx swaps the live table every second, so a
        found element can be gone before Selenium reads it (StaleElementReferenceException)."""
        return str(browser.execute_script(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent.trim() : '';", selector))

    def cell(field: str) -> str:
        return text_of(f'td[data-queue="chat"][data-field="{field}"]')

    # Log in: the guard sends the browser to the form, the form back to the dashboard.
    browser.get(f"{stack.api_url}/admin")
    wait_until(lambda: "/admin/login" in browser.current_url, 10, "the login form")
    browser.find_element(By.NAME, "email").send_keys(admin.email)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.save_screenshot(str(tmp_path / "login.png"))
    browser.find_element(By.CSS_SELECTOR, "form[action='/admin/login'] button").click()
    wait_until(lambda: browser.current_url.endswith("/admin/queues"), 15, "the queues page")
    assert "Queues" in browser.title and admin.email in browser.page_source

    # The table is live: its timestamp moves every second over SSE.
    stamp = text_of("#queues-updated")
    wait_until(lambda: text_of("#queues-updated") != stamp, 10, "an SSE frame")
    assert cell("depth") == "0"

    # 40 slow jobs: the 4 threads of the session's interactive pool take ~8 s over them.
    submitted = await asyncio.gather(*[client.post("/v1/jobs", json=chat_job(f"[[sim: ttft_ms=800]] drain {i}"))
                                       for i in range(40)])
    assert {r.status_code for r in submitted} == {202}
    seen: list[int] = []

    def depth_seen() -> int:
        value = int(cell("depth"))
        if not seen or seen[-1] != value:
            seen.append(value)
        return value

    wait_until(lambda: depth_seen() > 0, 15, "chat's depth to go up")
    wait_until(lambda: depth_seen() >= 0 and int(cell("running")) > 0, 15, "jobs to run")
    browser.save_screenshot(str(tmp_path / "queues-draining.png"))
    wait_until(lambda: depth_seen() == 0 and cell("running") == "0" and cell("queued") == "0", 90,
               "chat to drain")
    browser.save_screenshot(str(tmp_path / "queues-drained.png"))
    assert max(seen) > 0 and seen[-1] == 0 and len({v for v in seen if v > 0}) >= 2, seen
    # Rates count whole 10-second buckets: the last completions show once their bucket has closed.
    wait_until(lambda: float(cell("completed_per_second")) > 0, 15, "the completion rate")
    for resp in submitted:
        assert (await wait_for_status(client, resp.json()["id"]))["status"] == "succeeded"

    # A dead letter, requeued from its page after the confirmation.
    job_id = await dead_letters(user, "[[sim: ttft_ms=50]] back from the dead")
    browser.get(f"{stack.api_url}/admin/dead-letters?queue=chat")
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-message="{job_id}"]')
    assert "queued" in row.text and "RuntimeError: chaos: infrastructure error" in row.text
    browser.save_screenshot(str(tmp_path / "dead-letters-before.png"))
    row.find_element(By.CSS_SELECTOR, "button.requeue").click()
    confirm = WebDriverWait(browser, 5).until(expected_conditions.alert_is_present())
    assert str(job_id) in confirm.text
    confirm.accept()
    wait_until(lambda: "Requeued 1 dead letter(s) of chat" in text_of("#flash"), 10,
               "the requeue's flash")
    assert not browser.find_elements(By.CSS_SELECTOR, f'tr[data-message="{job_id}"]')
    browser.save_screenshot(str(tmp_path / "dead-letters-after.png"))
    done = await wait_for_status(client, str(job_id))
    assert done["status"] == "succeeded" and done["claims"] == 1

    # Its page: the attempt it made and its events, replayed from the log.
    browser.get(f"{stack.api_url}/admin/jobs/{job_id}")
    assert browser.find_element(By.ID, "job-status").text == "succeeded"
    assert "sim-small" in browser.find_element(By.ID, "attempts").text
    events = [e.get_attribute("data-event") for e in browser.find_elements(By.CSS_SELECTOR, "#events tr[data-event]")]
    assert events[0] == "queued" or events[0] == "started", events
    assert events[-1] == "succeeded", events
    browser.find_element(By.CSS_SELECTOR, "button[hx-get$='/events']").click()  # replay again, in place
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#events tr[data-event='succeeded']"), 5, "the replay")
    browser.set_window_size(1440, 2000)  # the whole job in one picture
    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(tmp_path / "job.png"))

    # The pools: the session's interactive pool, alive, having run our jobs.
    browser.get(f"{stack.api_url}/admin/workers")
    wait_until(lambda: "chat" in text_of('tr[data-pool="interactive"]'), 10, "the interactive pool")
    assert browser.find_elements(By.CSS_SELECTOR, "#workers .badge.ok")
    browser.save_screenshot(str(tmp_path / "workers.png"))

    [(actor, target, details)] = audit_rows(stack, "admin.requeue")
    assert actor == admin.id and target == "chat" and details and details["message_ids"] == [str(job_id)]
    for name in ("login", "queues-draining", "queues-drained", "dead-letters-before", "dead-letters-after", "job",
                 "workers"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000, name
