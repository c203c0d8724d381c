"""A small labelled retrieval set: documents, queries and the one document each query should find.

Used by `tests/test_knowledge.py` (hybrid must not rank worse than vector-only)
and `scripts/bench/files.py` (the figures in `docs/benchmarks.md`).

Two kinds of query:

- `topic`: a question in the words a person would use, answered by one short
  document among others on neighbouring subjects (near misses share some of
  its words);
- `exact`: an identifier (an error code, a part number, an invoice, a person's
  name) plus a common word. The document that names the identifier is long and
  mentions it once, so its chunk's vector is diluted; a short note dense in
  the common word is nearer by vectors. Full text finds the identifier.

`evaluate` scores a ranking function by mean reciprocal rank (MRR@10), hit@1
and recall@5 over the documents' names, per query kind.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

#: Neutral words for filler paragraphs: none of them is a query term below.
_FILLER_TEXT = (
    "during review the team agreed that each change should be recorded in the weekly summary with its "
    "owner and expected completion date while open questions go to the shared planning board for "
    "discussion at the next meeting where priorities are revisited against the quarterly goals and the "
    "budget so nothing important slips between teams or is forgotten after handover to another group "
    "later"
)
_FILLER = tuple(_FILLER_TEXT.split())


def filler(words: int, seed: int) -> str:
    """Deterministic neutral sentences, about `words` words long."""
    rng = random.Random(seed)
    sentences: list[str] = []
    count = 0
    while count < words:
        n = rng.randint(9, 18)
        sentences.append(" ".join(rng.choice(_FILLER) for _ in range(n)).capitalize() + ".")
        count += n
    return " ".join(sentences)


def _long(seed: int, inner: str, before: int = 260, after: int = 120) -> str:
    """A long document that states `inner` once, between neutral paragraphs."""
    return f"{filler(before, seed)}\n\n{inner}\n\n{filler(after, seed + 1000)}"


#: Document name -> text.
DOCUMENTS: dict[str, str] = {
    # Topics, with near misses sharing some words.
    "leave-policy.txt": "Annual leave policy. New employees receive twenty vacation days per year, rising to "
                        "twenty-five after three years of service. Unused vacation days carry over until March.",
    "sick-leave.txt": "Sick leave. Employees who are ill should tell their manager before nine in the morning. "
                      "A doctor's note is needed after three consecutive sick days.",
    "parental-leave.txt": "Parental leave. Parents receive sixteen weeks of paid parental leave after the birth "
                          "or adoption of a child, which may be split into two periods.",
    "expenses.txt": "Travel expenses. Hotel costs are reimbursed up to one hundred and eighty euros per night; "
                    "submit receipts within thirty days of returning from the trip.",
    "laptops.txt": "Laptop replacement. Engineering laptops are replaced every three years; a broken screen or "
                   "battery is repaired by the service desk within two working days.",
    "passwords.txt": "Password rules. Passwords must have at least fourteen characters and are rotated only "
                     "after a suspected compromise. Use the company password manager for shared accounts.",
    "onboarding.txt": "Onboarding checklist. On their first day a new hire collects a badge at reception, "
                      "meets their mentor and sets up two-factor authentication.",
    "backups.txt": "Database backups. Production PostgreSQL is backed up every night with continuous WAL "
                   "archiving; a restore drill runs on the first Monday of each quarter.",
    "incidents.txt": "Incident response. A severity one outage pages the on-call engineer immediately; the "
                     "incident commander posts status updates every thirty minutes until resolved.",
    "deploys.txt": "Deployments. Services deploy through the canary pipeline: five percent of traffic for "
                   "fifteen minutes, then the rest if error rates stay flat. Friday deploys need approval.",
    "cafeteria.txt": "Cafeteria. Lunch is served from noon to two; the vegetarian menu changes weekly and "
                     "coffee in the kitchen on the third floor is free.",
    "parking.txt": "Parking. Staff parking permits are renewed each January; electric vehicle chargers on "
                   "level minus two are shared and limited to four hours per car.",
    # Exact identifiers buried in long documents...
    "runbook-gateway.txt": _long(1, "Error ERR-4471 means the upstream gateway timeout was reached while "
                                    "waiting for the billing service."),
    "parts-catalogue.txt": _long(2, "Part number ZX-88-1207 is the replacement hinge for the loading dock "
                                    "door on the east side."),
    "invoices-2025.txt": _long(3, "Invoice INV-20931 from the cleaning contractor was paid twice and a "
                                  "refund was requested."),
    "team-directory.txt": _long(4, "Questions about the data warehouse go to Oksana Brzezinski, who "
                                   "maintains the nightly export jobs."),
    "firmware-notes.txt": _long(5, "Firmware build 7.3.19-rc2 fixes the sensor calibration drift seen on "
                                   "warehouse scanners."),
    "vendor-contracts.txt": _long(6, "Contract CT-5512 with the courier company renews automatically unless "
                                     "cancelled ninety days before the end date."),
    # ...and the short notes that are nearer by vectors to their common words.
    "timeouts-note.txt": "Timeout settings. The gateway timeout is thirty seconds; a timeout is retried twice "
                         "before the request fails.",
    "doors-note.txt": "Door maintenance. Every door hinge on the loading dock is checked monthly; a squeaking "
                      "hinge is oiled, a broken hinge replaced.",
    "refunds-note.txt": "Refunds. A refund for a duplicate payment is issued within ten days; refund requests "
                        "go to the accounts team.",
    "warehouse-note.txt": "Data warehouse. The warehouse holds sales and stock tables; warehouse queries run "
                          "on the reporting replica.",
    "scanners-note.txt": "Scanners. Warehouse scanners need a calibration check each week; sensor cleaning "
                         "keeps scanner calibration stable.",
    "courier-note.txt": "Courier. The courier collects parcels at four; courier pickups on holidays must be "
                        "booked a day ahead.",
}


@dataclass(frozen=True)
class Case:
    """One query and the document it should find."""

    query: str
    relevant: str
    kind: Literal["topic", "exact"]


CASES: tuple[Case, ...] = (
    Case("how many vacation days do new employees get", "leave-policy.txt", "topic"),
    Case("doctor's note for sick days", "sick-leave.txt", "topic"),
    Case("paid parental leave weeks after adoption", "parental-leave.txt", "topic"),
    Case("hotel costs reimbursed per night", "expenses.txt", "topic"),
    Case("broken laptop screen repair", "laptops.txt", "topic"),
    Case("minimum password length characters", "passwords.txt", "topic"),
    Case("first day badge and mentor for a new hire", "onboarding.txt", "topic"),
    Case("restore drill for PostgreSQL backups", "backups.txt", "topic"),
    Case("who posts status updates during a severity one outage", "incidents.txt", "topic"),
    Case("canary pipeline traffic percentage", "deploys.txt", "topic"),
    Case("vegetarian lunch menu", "cafeteria.txt", "topic"),
    Case("electric vehicle chargers parking permits", "parking.txt", "topic"),
    Case("ERR-4471 timeout", "runbook-gateway.txt", "exact"),
    Case("ZX-88-1207 hinge", "parts-catalogue.txt", "exact"),
    Case("INV-20931 refund", "invoices-2025.txt", "exact"),
    Case("Oksana Brzezinski warehouse", "team-directory.txt", "exact"),
    Case("7.3.19-rc2 scanners calibration", "firmware-notes.txt", "exact"),
    Case("CT-5512 courier", "vendor-contracts.txt", "exact"),
)


@dataclass(frozen=True)
class Metrics:
    """Ranking quality over a set of cases."""

    cases: int
    mrr: float
    hit_at_1: float
    recall_at_5: float


def reciprocal_rank(ranked: list[str], relevant: str, k: int = 10) -> float:
    """1/rank of the relevant document among the first `k` distinct documents (0 if absent)."""
    seen: list[str] = []
    for name in ranked:
        if name not in seen:
            seen.append(name)
    seen = seen[:k]
    return 1 / (seen.index(relevant) + 1) if relevant in seen else 0.0


def metrics(ranks: list[float]) -> Metrics:
    """MRR, hit@1 and recall@5 from the reciprocal ranks of the cases."""
    return Metrics(cases=len(ranks), mrr=statistics.fmean(ranks) if ranks else 0.0,
                   hit_at_1=sum(r == 1 for r in ranks) / max(1, len(ranks)),
                   recall_at_5=sum(r >= 1 / 5 for r in ranks) / max(1, len(ranks)))


async def evaluate(rank: Callable[[str], Awaitable[list[str]]]) -> dict[str, Metrics]:
    """Metrics of `rank` (a query -> document names, best first) for `all` cases and each kind."""
    ranks: dict[str, list[float]] = {"all": [], "topic": [], "exact": []}
    for case in CASES:
        rr = reciprocal_rank(await rank(case.query), case.relevant)
        ranks["all"].append(rr)
        ranks[case.kind].append(rr)
    return {kind: metrics(values) for kind, values in ranks.items()}
