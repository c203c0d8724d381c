"""`/admin`: the operator dashboard — queues (live over SSE), workers, jobs, dead letters, providers, users, audit.

HTML pages with htmx, rendered here from `api/dashboard/templates`; htmx and
the stylesheet are served from `/admin/static`. Login is `api/dashboard/login.py`
(admins only), the session cookie and the guard `api/dashboard/session.py`.
Every action is one of `api/operators.py`'s, which audit themselves; every
form post carries the CSRF token (`api/dashboard/__init__.py`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import Provide
from litestar.enums import RequestEncodingType
from litestar.params import Body, Parameter
from litestar.response import Redirect, ServerSentEvent, ServerSentEventMessage, Template
from litestar.static_files import create_static_files_router
from loguru import logger

from api import operators
from api.auth import client_ip
from api.dashboard import PREFIX, STATIC
from api.dashboard.login import log_in
from api.dashboard.pages import (
    LOGIN,
    SECURITY_HEADERS,
    Flash,
    back_to,
    choice,
    error_response,
    is_htmx,
    page,
    safe_next,
    secure,
    uuid_or_none,
)
from api.dashboard.session import (
    Session,
    admin_guard,
    cookie,
    expired_cookie,
    issue,
    provide_operator,
    provide_session,
    session_of,
)
from api.idempotency import check_replay, fingerprint
from api.paging import Page, one_more
from api.paging import page as paged
from api.state import Services
from jobs import audit, queues, store
from jobs.accounts import Principal, list_users
from jobs.errors import NotFound, SwitchyardError
from jobs.kinds import Credits
from jobs.states import Kind, Queue, Status
from jobs.tokens import revoke_signed

#: Rows per page of the jobs, users and audit lists; dead letters shown per queue.
PAGE_SIZE = 50
DEAD_LETTERS_SHOWN = 200
#: The live queue table: one frame a second; a stream ends after a while (or with the session) and the
#: browser reconnects through the guard, so a demoted admin's open tab goes quiet within minutes.
STREAM_INTERVAL_SECONDS = 1.0
STREAM_SECONDS = 300
#: "Requeue all" moves at most this many dead letters per click.
REQUEUE_ALL_LIMIT = 10_000

Form = Body(media_type=RequestEncodingType.URL_ENCODED)
Reason = Annotated[str, msgspec.Meta(max_length=500)]


class LoginForm(msgspec.Struct, kw_only=True):
    """The login form."""

    email: str = ""
    password: str = ""
    #: Where the guard sent the browser from.
    next: str = ""


class DeadLetterAction(msgspec.Struct, kw_only=True):
    """Requeue or purge one dead letter of a queue (`message_id`), or all of them."""

    queue: str
    message_id: str = ""


class CircuitAction(msgspec.Struct, kw_only=True):
    """Force a target's circuit, or hand it back to the breaker (`auto`)."""

    target: str
    state: Literal["open", "closed", "auto"]
    reason: Reason = ""


class GrantForm(msgspec.Struct, kw_only=True):
    """Grant credits to a user; `idempotency_key` is fresh per rendered form, so a double click grants once."""

    user_id: UUID
    credits: Credits
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    idempotency_key: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    #: Shown in the confirmation of the next grant (the form comes back after each one).
    email: Annotated[str, msgspec.Meta(max_length=254)] = ""


class DashboardLogin(Controller):
    """The login form and logout: the only dashboard routes without a session."""

    path = PREFIX
    include_in_schema = False
    exception_handlers = {Exception: error_response}  # noqa: RUF012

    @get("/login")
    async def login_page(self, next_: Annotated[str | None, Parameter(query="next")] = None) -> Template:
        """The login form."""
        return page("login.html", next=safe_next(next_), email="", error=None)

    @post("/login", status_code=200)
    async def login(self, request: Request[Any, Any, Any], data: Annotated[LoginForm, Form],
                    services: Services) -> Response[Any]:
        """Check the email and password of an admin; on success set the session cookie and go to the dashboard."""
        try:
            principal = await log_in(services, data.email.strip(), data.password, client_ip(request))
        except SwitchyardError as exc:
            wait = exc.extra.get("retry_after")  # a lockout
            headers = {"Retry-After": str(wait)} if wait is not None else {}
            return page("login.html", status_code=exc.status, headers=headers, next=safe_next(data.next),
                        email=data.email, error=exc.message)
        token = issue(services.settings, principal.user_id)
        return Redirect(path=safe_next(data.next), status_code=303, headers=SECURITY_HEADERS,
                        cookies=[cookie(token, secure=secure(request))])

    @post("/logout", status_code=303)
    async def logout(self, request: Request[Any, Any, Any], services: Services) -> Redirect:
        """Forget the session (audited when there was one) and show the login form."""
        try:
            session: Session | None = session_of(request, services.settings)
        except SwitchyardError:
            session = None
        if session is not None:
            user_id = session.user_id
            await revoke_signed(services.redis, session.jti, session.expires_at)
            async with services.pool.connection() as conn:
                await audit.audit(conn, "admin.logout", actor_id=user_id, target=f"user:{user_id}",
                                  ip=client_ip(request))
        return Redirect(path=LOGIN, status_code=303, headers=SECURITY_HEADERS,
                        cookies=[expired_cookie(secure=secure(request))])


async def _queue_stats(services: Services) -> list[queues.QueueStats]:
    return await queues.queue_stats(services.redis, services.pool, services.broker.namespace)


async def _dead_letter_context(services: Services, queue: str) -> dict[str, Any]:
    named = queues.queue_named(queue)
    hold = services.settings.dead_letter_hold_seconds
    letters = await queues.dead_letters(services.redis, services.pool, services.broker.namespace, named,
                                        hold_seconds=hold, limit=DEAD_LETTERS_SHOWN)
    counts = {s.name: s.dead_letters for s in await _queue_stats(services)}
    return {"queue": str(named), "letters": letters, "counts": counts, "hold_seconds": hold}


async def _provider_context(services: Services) -> dict[str, Any]:
    return {"targets": await operators.provider_states(services)}


def _new_key() -> str:
    return f"dashboard-grant:{uuid.uuid4()}"


class Dashboard(Controller):
    """Every page and action of the dashboard; admins with a session only (`admin_guard`)."""

    path = PREFIX
    include_in_schema = False
    guards = [admin_guard]  # noqa: RUF012
    dependencies = {"operator": Provide(provide_operator, sync_to_thread=False),  # noqa: RUF012
                    "dashboard_session": Provide(provide_session, sync_to_thread=False)}
    exception_handlers = {Exception: error_response}  # noqa: RUF012

    @get("/")
    async def home(self) -> Redirect:
        """The queues are the home page."""
        return Redirect(path=f"{PREFIX}/queues", headers=SECURITY_HEADERS)

    @get("/queues")
    async def queues_page(self, services: Services, operator: Principal) -> Template:
        """Every queue's figures, refreshed every second over SSE."""
        return page("queues.html", operator=operator, section="queues", queues=await _queue_stats(services),
                    updated=datetime.now(UTC))

    @get("/queues/stream")
    async def queue_stream(self, request: Request[Any, Any, Any], services: Services,
                           dashboard_session: Session) -> ServerSentEvent:
        """Server-sent `queues` events, each the rendered queue table, every second until the client leaves."""
        engine = request.app.template_engine
        assert engine is not None  # configured in api/app.py
        table = engine.get_template("_queues.html")
        ends = min(time.time() + STREAM_SECONDS, dashboard_session.expires_at)

        async def frames() -> AsyncIterator[ServerSentEventMessage]:
            # The response's task group cancels this generator when the client disconnects.
            while time.time() < ends:
                try:
                    stats = await _queue_stats(services)
                except Exception:
                    logger.opt(exception=True).warning("queue figures unavailable; ending the dashboard stream")
                    return
                yield ServerSentEventMessage(data=table.render(queues=stats, updated=datetime.now(UTC)), event="queues")
                await asyncio.sleep(STREAM_INTERVAL_SECONDS)

        return ServerSentEvent(frames(), retry_duration=1000, headers=SECURITY_HEADERS)

    @get("/workers")
    async def workers_page(self, services: Services, operator: Principal) -> Template:
        """Pools and their processes (alive or stale), from the workers' heartbeats."""
        return page("workers.html", operator=operator, section="workers",
                    workers=await operators.worker_list(services))

    @get("/jobs")
    async def jobs_page(
        self,
        services: Services,
        operator: Principal,
        status: str | None = None,
        kind: str | None = None,
        queue: str | None = None,
        user_id: str | None = None,
        cursor: str | None = None,
    ) -> Template:
        """Jobs of every user, newest first, filtered by status, kind, queue and owner."""
        wanted_status, wanted_kind = choice(status, Status, "status"), choice(kind, Kind, "kind")
        wanted_queue, owner = choice(queue, Queue, "queue"), uuid_or_none(user_id, "user id")
        rows = await store.list_all_jobs(services.pool, owner_id=owner, status=wanted_status, kind=wanted_kind,
                                         queue=wanted_queue, before=uuid_or_none(cursor, "cursor"),
                                         limit=one_more(PAGE_SIZE))
        listing = paged(Page, rows, PAGE_SIZE, lambda r: str(r.id))
        filters = {"status": wanted_status, "kind": wanted_kind, "queue": wanted_queue, "user_id": owner}
        shown = {k: str(v) for k, v in filters.items() if v is not None}
        return page("jobs.html", operator=operator, section="jobs", jobs=listing.data, filters=shown,
                    next_cursor=listing.next_cursor, statuses=list(Status), kinds=list(Kind),
                    queue_names=list(Queue))

    @get("/jobs/{job_id:uuid}")
    async def job_page(self, job_id: UUID, services: Services, operator: Principal) -> Template:
        """One job: its fields, every provider attempt, and its events replayed from the log."""
        row = await store.get_job(services.pool, job_id, None)
        if row is None:
            raise NotFound(f"job {job_id} not found")
        return page("job.html", operator=operator, section="jobs", job=row,
                    attempts=await store.list_attempts(services.pool, job_id),
                    events=await services.events.replay(job_id))

    @get("/jobs/{job_id:uuid}/events")
    async def job_events(self, job_id: UUID, services: Services) -> Template:
        """The job's events, replayed again (the job page's "Replay" button swaps them in)."""
        if await store.get_job(services.pool, job_id, None) is None:
            raise NotFound(f"job {job_id} not found")
        return page("_events.html", job_id=job_id, events=await services.events.replay(job_id))

    @get("/dead-letters")
    async def dead_letters_page(self, services: Services, operator: Principal,
                                queue: str = str(Queue.CHAT)) -> Template:
        """A queue's dead letters, newest first, with requeue and purge."""
        return page("dead_letters.html", operator=operator, section="dead-letters",
                    **await _dead_letter_context(services, queue))

    @post("/dead-letters/requeue", status_code=200)
    async def requeue(self, request: Request[Any, Any, Any], data: Annotated[DeadLetterAction, Form],
                      services: Services, operator: Principal) -> Response[Any]:
        """Send one dead letter, or all of the queue's, back to the queue with fresh retries."""
        ids = [data.message_id] if data.message_id else None
        done = await operators.requeue(services, client_ip(request), operator, data.queue, ids, REQUEUE_ALL_LIMIT)
        if not is_htmx(request):
            return back_to(f"{PREFIX}/dead-letters?queue={done.queue}")
        flash = Flash("ok", f"Requeued {done.requeued} dead letter(s) of {done.queue}; {done.remaining} left.")
        return page("_dead_letters.html", flash=flash, **await _dead_letter_context(services, done.queue))

    @post("/dead-letters/purge", status_code=200)
    async def purge(self, request: Request[Any, Any, Any], data: Annotated[DeadLetterAction, Form],
                    services: Services, operator: Principal) -> Response[Any]:
        """Delete one dead letter, or all of the queue's, and fail their held jobs `delivery_failed`."""
        ids = [data.message_id] if data.message_id else None
        done = await operators.purge(services, client_ip(request), operator, data.queue, ids)
        if not is_htmx(request):
            return back_to(f"{PREFIX}/dead-letters?queue={done.queue}")
        flash = Flash("ok", f"Purged {done.purged} dead letter(s) of {done.queue}; "
                            f"{done.jobs_failed} job(s) failed delivery_failed.")
        return page("_dead_letters.html", flash=flash, **await _dead_letter_context(services, done.queue))

    @get("/providers")
    async def providers_page(self, services: Services, operator: Principal) -> Template:
        """Every target of the routes: circuit state, error rate, RPM/TPM use; force a circuit."""
        return page("providers.html", operator=operator, section="providers", **await _provider_context(services))

    @post("/providers/circuit", status_code=200)
    async def force_circuit(self, request: Request[Any, Any, Any], data: Annotated[CircuitAction, Form],
                            services: Services, operator: Principal) -> Response[Any]:
        """Force a target's circuit open or closed, or hand it back to the breaker."""
        state = await operators.force(services, client_ip(request), operator, data.target, data.state, data.reason)
        if not is_htmx(request):
            return back_to(f"{PREFIX}/providers")
        flash = Flash("ok", f"{state.target}: circuit {data.state} (now {state.state}).")
        return page("_providers.html", flash=flash, **await _provider_context(services))

    @get("/users")
    async def users_page(self, services: Services, operator: Principal, email: str | None = None,
                         cursor: str | None = None) -> Template:
        """Users newest first (those whose e-mail contains `email`), with their credits and a grant form each."""
        rows = await list_users(services.pool, email=(email or "").strip() or None,
                                before=uuid_or_none(cursor, "cursor"), limit=one_more(PAGE_SIZE))
        listing = paged(Page, rows, PAGE_SIZE, lambda u: str(u.id))
        return page("users.html", operator=operator, section="users", users=listing.data, email=email or "",
                    next_cursor=listing.next_cursor, new_key=_new_key)

    @post("/users/grant", status_code=200)
    async def grant(self, request: Request[Any, Any, Any], data: Annotated[GrantForm, Form],
                    services: Services, operator: Principal) -> Response[Any]:
        """Enqueue a `billing.grant` job for the user; the form comes back with a fresh key for the next grant."""
        bound_to = fingerprint(data.idempotency_key, [str(data.user_id), data.credits, data.reason])
        outcome = await operators.grant(services, client_ip(request), operator, data.user_id, data.credits,
                                        data.reason, idempotency_key=data.idempotency_key, fingerprint=bound_to)
        check_replay(outcome, bound_to, Kind.BILLING_GRANT,
                     conflict="this form was already used for another grant: reload the page")
        verb = "Granting" if outcome.created else "Already granting"
        if not is_htmx(request):
            return back_to(f"{PREFIX}/users")
        flash = Flash("ok", f"{verb} {data.credits} credits to {data.email or data.user_id}: job {outcome.job.id}.")
        return page("_grant_form.html", flash=flash, user_id=data.user_id, email=data.email, new_key=_new_key)

    @get("/audit")
    async def audit_page(self, services: Services, operator: Principal, action: str | None = None,
                         cursor: int | None = None) -> Template:
        """The audit log, newest first, optionally of one action."""
        rows = await audit.entries(services.pool, action=(action or "").strip() or None, before=cursor,
                                   limit=one_more(PAGE_SIZE))
        listing = paged(Page, rows, PAGE_SIZE, lambda e: e.id)
        return page("audit.html", operator=operator, section="audit", entries=listing.data,
                    action=action or "", next_cursor=listing.next_cursor)


#: Route handlers of this module, collected by api/routes/__init__.py.
ROUTES: list[Any] = [
    DashboardLogin,
    Dashboard,
    create_static_files_router(path=f"{PREFIX}/static", directories=[STATIC], name="dashboard-static",
                               include_in_schema=False),
]
