"""The reliability oracle: after a chaos scenario, did every accepted job keep its promises?

Run over the database (and, when given, the Redis event log) once the
scenario's traffic has stopped. It checks, for the job ids the scenario got a
202 for:

    lost          every accepted id has a row, and the row reached a terminal state
    effects once  a job's provider calls were recorded by one claim only; a chat
                  job has at most one successful call; a succeeded job has a result
    settled once  ≤ 1 `reserve`, ≤ 1 `settle`, ≤ 1 `release` ledger row per job; a
                  terminal job that reserved has settle + release = reserve, a live
                  one has neither; the job's own columns agree with its ledger rows
    sums          Σ reserved = Σ settled + Σ released over the terminal jobs
    never < 0     no ledger row's `balance_after` and no account balance below zero;
                  each account's available credits equal what its ledger adds up to
    events        (with Redis) each job's replay log counts 1, 2, 3… without gaps or
                  duplicates and holds at most one terminal event, last, the job's status
                  (exactly one, and every log present, when Redis stayed up)

The ledger and the jobs table are the evidence; the account balance is read
through `account_balances` alone, so a change in how reservations are stored
changes one function here. Violations raise `AssertionError` listing every
offending job (the first few of each kind); otherwise `check` returns a
`Report` whose counts the scenarios print.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from uuid import UUID

import msgspec
import psycopg
import redis

from jobs.events import ENDING_KEY
from jobs.states import TERMINAL_EVENTS, TERMINAL_STATUSES

#: Ledger kinds that add to a balance from outside (not a job's reservation cycle).
_CREDIT_KINDS = ("grant", "topup", "refund")
#: How many offenders of each kind an error message names.
_SHOWN = 5


@dataclass
class Report:
    """What the oracle saw: counts for the scenario's figures."""

    accepted: int = 0
    terminal: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    #: Failed jobs by their error code.
    failure_codes: dict[str, int] = field(default_factory=dict)
    #: Jobs claimed more than once (redelivered after a kill, a lost lease, a restart).
    reclaimed: int = 0
    claims: int = 0
    provider_calls: int = 0
    reserved: int = 0
    settled: int = 0
    released: int = 0
    ledger_rows: int = 0
    accounts: int = 0
    #: Jobs whose event log was read and checked, and jobs whose log Redis no longer had.
    event_logs_checked: int = 0
    event_logs_missing: int = 0
    terminal_events_missing: int = 0
    events: int = 0

    def figures(self) -> dict[str, Any]:
        """The report as plain data (for JSON summaries)."""
        return asdict(self)


class Violations:
    """Collects what went wrong, by rule, and raises once with all of it."""

    def __init__(self) -> None:
        self.found: dict[str, list[str]] = defaultdict(list)

    def add(self, rule: str, detail: str) -> None:
        self.found[rule].append(detail)

    def raise_if_any(self, report: Report) -> None:
        if not self.found:
            return
        lines = [f"reliability oracle: {sum(map(len, self.found.values()))} violation(s) over "
                 f"{report.accepted} accepted jobs"]
        for rule, details in self.found.items():
            shown = "; ".join(details[:_SHOWN]) + (f"; … {len(details) - _SHOWN} more" if len(details) > _SHOWN else "")
            lines.append(f"  {rule} ({len(details)}): {shown}")
        raise AssertionError("\n".join(lines))


def account_balances(conn: psycopg.Connection[Any], user_ids: Sequence[UUID]) -> dict[UUID, int]:
    """Each user's available credits — the one place the oracle reads the account itself."""
    rows = conn.execute("SELECT user_id, balance FROM credit_accounts WHERE user_id = ANY(%s)",
                        (list(user_ids),)).fetchall()
    return {row[0]: int(row[1]) for row in rows}


def check(database_url: str, accepted: Iterable[str | UUID], *, redis_url: str | None = None,
          events_required: bool = False) -> Report:
    """Check every rule over the accepted jobs; raise AssertionError naming each violation.

    Args:
        accepted: ids of the jobs the scenario got a 202 for.
        redis_url: also check each job's event log in this Redis.
        events_required: a job whose event log or terminal event is missing is a violation (with a Redis
            that was up throughout).
    """
    ids = sorted({UUID(str(i)) for i in accepted})
    report, bad = Report(accepted=len(ids)), Violations()
    with psycopg.connect(database_url, autocommit=True) as conn:
        jobs = _jobs(conn, ids, report, bad)
        _attempts(conn, jobs, report, bad)
        owners = _ledger(conn, jobs, report, bad)
        _balances(conn, owners, report, bad)
    if redis_url is not None:
        if events_required:
            _outbox_drained(redis_url, bad)
        _events(redis_url, jobs, report, bad, required=events_required)
    bad.raise_if_any(report)
    return report


@dataclass
class _Job:
    id: UUID
    owner_id: UUID
    kind: str
    status: str
    claims: int
    reserved_credits: int
    charged_credits: int | None
    has_result: bool
    batch_id: str | None
    error_code: str | None = None


def _jobs(conn: psycopg.Connection[Any], ids: list[UUID], report: Report, bad: Violations) -> dict[UUID, _Job]:
    """Every accepted job exists and is terminal; a succeeded one has a result."""
    rows = conn.execute(
        """
        SELECT id, owner_id, kind, status, attempts, reserved_credits, charged_credits, result IS NOT NULL,
               batch_id, error->>'code'
        FROM jobs WHERE id = ANY(%s)
        """, (ids,)).fetchall()
    jobs = {row[0]: _Job(*row) for row in rows}
    for missing in sorted(set(ids) - jobs.keys()):
        bad.add("lost: accepted but no row", str(missing))
    statuses = Counter(job.status for job in jobs.values())
    report.by_status = dict(sorted(statuses.items()))
    report.failure_codes = dict(Counter(job.error_code or "?" for job in jobs.values() if job.status == "failed"))
    report.terminal = sum(n for status, n in statuses.items() if status in TERMINAL_STATUSES)
    report.claims = sum(job.claims for job in jobs.values())
    report.reclaimed = sum(job.claims > 1 for job in jobs.values())
    for job in jobs.values():
        if job.status not in TERMINAL_STATUSES:
            bad.add("stuck: accepted but not terminal", f"{job.id} {job.status} after {job.claims} claim(s)")
        elif job.status == "succeeded" and not job.has_result:
            bad.add("succeeded without a result", str(job.id))
    return jobs


def _attempts(conn: psycopg.Connection[Any], jobs: dict[UUID, _Job], report: Report, bad: Violations) -> None:
    """Provider calls were recorded by one claim; a chat job succeeded at most one call."""
    rows = conn.execute(
        """
        SELECT job_id, count(*), count(DISTINCT attempt), count(*) FILTER (WHERE outcome = 'ok')
        FROM job_attempts WHERE job_id = ANY(%s) GROUP BY job_id
        """, (list(jobs),)).fetchall()
    for job_id, calls, claims, ok in rows:
        report.provider_calls += calls
        if claims > 1:
            bad.add("effects twice: calls recorded by several claims", f"{job_id} by {claims} claims")
        if jobs[job_id].kind == "chat.completion" and ok > 1:
            bad.add("effects twice: several successful completions", f"{job_id} {ok} ok calls")


def _ledger(conn: psycopg.Connection[Any], jobs: dict[UUID, _Job], report: Report,
            bad: Violations) -> set[UUID]:
    """At most one reserve/settle/release per job, and they add up; returns the owners involved."""
    rows = conn.execute(
        "SELECT job_id, kind, count(*), sum(amount) FROM credit_ledger WHERE job_id = ANY(%s) GROUP BY 1, 2",
        (list(jobs),)).fetchall()
    ledger: dict[UUID, dict[str, int]] = defaultdict(dict)
    for job_id, kind, count, amount in rows:
        report.ledger_rows += count
        if count > 1:
            bad.add(f"settled twice: {count} {kind} rows", str(job_id))
        ledger[job_id][kind] = int(amount)
    for job in jobs.values():
        _job_ledger(job, ledger.get(job.id, {}), report, bad)
    return {job.owner_id for job in jobs.values()}


def _job_ledger(job: _Job, rows: dict[str, int], report: Report, bad: Violations) -> None:
    reserve, settle, release = rows.get("reserve"), rows.get("settle"), rows.get("release")
    if job.batch_id is not None:
        # A batch line settles against its batch's reservation: a settle row, never its own reserve/release.
        if reserve is not None or release is not None:
            bad.add("batch line with its own reserve/release", str(job.id))
        return
    if reserve is not None and reserve != job.reserved_credits:
        bad.add("reserve row differs from the job's reservation", f"{job.id} {reserve} != {job.reserved_credits}")
    if job.status not in TERMINAL_STATUSES:
        if settle is not None or release is not None:
            bad.add("settled before it ended", f"{job.id} {job.status}")
        return
    if reserve is None:
        if settle or release:
            bad.add("settled without a reservation", str(job.id))
        return
    if settle is None or release is None:
        bad.add("ended but never settled", f"{job.id} {job.status} reserve={reserve} settle={settle} "
                                           f"release={release}")
        return
    if settle + release != reserve:
        bad.add("reserved != settled + released", f"{job.id} {reserve} != {settle} + {release}")
    if job.status != "succeeded" and settle:
        bad.add("charged for a job that did not succeed", f"{job.id} {job.status} charged {settle}")
    if job.charged_credits is not None and job.charged_credits != settle:
        bad.add("the job's charge differs from its settle row", f"{job.id} {job.charged_credits} != {settle}")
    report.reserved += reserve
    report.settled += settle
    report.released += release


def _balances(conn: psycopg.Connection[Any], owners: set[UUID], report: Report, bad: Violations) -> None:
    """No balance ever went below zero; each account holds what its ledger adds up to."""
    owner_list = sorted(owners)
    report.accounts = len(owner_list)
    for row in conn.execute(
            "SELECT id, user_id, kind, balance_after FROM credit_ledger WHERE user_id = ANY(%s) AND balance_after < 0",
            (owner_list,)).fetchall():
        bad.add("balance_after < 0", f"ledger row {row[0]} ({row[2]}) of {row[1]}: {row[3]}")
    sums = conn.execute(
        "SELECT user_id, kind, sum(amount) FROM credit_ledger WHERE user_id = ANY(%s) GROUP BY 1, 2",
        (owner_list,)).fetchall()
    by_user: dict[UUID, Counter[str]] = defaultdict(Counter)
    for user_id, kind, amount in sums:
        by_user[user_id][kind] = int(amount)
    for user_id, available in account_balances(conn, owner_list).items():
        if available < 0:
            bad.add("account balance < 0", f"{user_id}: {available}")
        kinds = by_user[user_id]
        expected = sum(kinds[k] for k in _CREDIT_KINDS) - kinds["reserve"] + kinds["release"]
        if available != expected:
            bad.add("account disagrees with its ledger", f"{user_id}: available {available}, ledger says {expected}")


def _outbox_drained(redis_url: str, bad: Violations, timeout: float = 30.0) -> None:
    """Wait for the maintenance loop to announce the ends a killed process owed (`jobs.events.ENDING_KEY`)."""
    client = redis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + timeout
        while (owed := client.zcard(ENDING_KEY)) and time.monotonic() < deadline:
            time.sleep(0.2)
        if owed:
            bad.add("terminal events still owed", f"{owed} jobs in the outbox after {timeout:g} s")
    finally:
        client.close()


def _events(redis_url: str, jobs: dict[UUID, _Job], report: Report, bad: Violations, *, required: bool) -> None:
    """Each job's replay log: seq 1, 2, 3… once each, exactly one terminal event, last, matching the row."""
    client = redis.Redis.from_url(redis_url)
    terminal = {str(t) for t in TERMINAL_EVENTS}
    try:
        live = [job for job in jobs.values() if job.batch_id is None]  # batch lines publish no events
        for start in range(0, len(live), 500):
            chunk = live[start:start + 500]
            pipe = client.pipeline(transaction=False)
            for job in chunk:
                pipe.xrange(f"sy:{{{job.id}}}:events")
            for job, entries in zip(chunk, pipe.execute(), strict=True):
                if not entries:
                    report.event_logs_missing += 1
                    if required:
                        bad.add("event log missing", str(job.id))
                    continue
                report.event_logs_checked += 1
                events = [msgspec.json.decode(fields[b"e"]) for _id, fields in entries]
                report.events += len(events)
                _event_log(job, events, terminal, report, bad, required=required)
    finally:
        client.close()


def _event_log(job: _Job, events: list[dict[str, Any]], terminal: set[str], report: Report, bad: Violations, *,
               required: bool) -> None:
    seqs = [event["seq"] for event in events]
    if seqs != list(range(1, len(seqs) + 1)):
        dupes = sorted(s for s, n in Counter(seqs).items() if n > 1)
        gaps = sorted(set(range(1, max(seqs) + 1)) - set(seqs))
        bad.add("event seq gaps/duplicates", f"{job.id} gaps {gaps[:5]} duplicates {dupes[:5]}")
    ends = [event["type"] for event in events if event["type"] in terminal]
    if not ends:
        # A job ended while Redis was down publishes no terminal event (streams read the row instead).
        report.terminal_events_missing += 1
        if required:
            bad.add("no terminal event", str(job.id))
    elif len(ends) > 1:
        bad.add("several terminal events", f"{job.id} {ends}")
    elif events[-1]["type"] != ends[0]:
        bad.add("events after the terminal event", f"{job.id} ends with {events[-1]['type']}")
    elif ends[0] != job.status:
        bad.add("terminal event differs from the job's status", f"{job.id} {ends[0]} != {job.status}")
