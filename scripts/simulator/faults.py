"""Fault directives (``x-sim`` header / ``[[sim: ...]]`` magic string) and simulator state.

Directive syntax: ``;``-separated ``key=value`` pairs, e.g. ``fault=429;retry_after=2;times=1``.
Recognised keys: fault, retry_after, hang_s, after, times, key, model, ttft_ms, tps, tokens.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

FAULTS = frozenset(
    {"429", "500", "503", "529", "400", "401", "context", "hang", "cut", "malformed"}
)
# Always listed by the model endpoints, so clients can discover something before first use.
DEFAULT_MODELS = ("sim-small", "sim-large", "sim-embed")
MAGIC_RE = re.compile(r"\[\[\s*sim\s*:(.*?)\]\]", re.IGNORECASE | re.DOTALL)
_NUMERIC = {"retry_after", "hang_s", "ttft_ms", "tps"}
_INTEGER = {"after", "times", "tokens"}
_KNOWN = _NUMERIC | _INTEGER | {"fault", "key", "model"}


class DirectiveError(ValueError):
    """Raised for a malformed or unknown simulator directive."""


@dataclass(frozen=True)
class Directives:
    """A parsed directive set; ``raw`` is the normalised text used as the state key."""

    raw: str = ""
    values: dict[str, str] = field(default_factory=dict)

    def _num(self, name: str) -> float | None:
        return float(self.values[name]) if name in self.values else None

    def _int(self, name: str) -> int | None:
        return int(self.values[name]) if name in self.values else None

    @property
    def fault(self) -> str | None:
        """The fault name, if any."""
        return self.values.get("fault")

    @property
    def model(self) -> str | None:
        """Only apply this directive set when the requested model equals this."""
        return self.values.get("model")

    @property
    def key(self) -> str | None:
        """Explicit name for the ``times`` counter (default: the directive text)."""
        return self.values.get("key")

    @property
    def retry_after(self) -> float:
        """Seconds advertised in ``Retry-After`` for ``fault=429`` (default 1)."""
        value = self._num("retry_after")
        return 1.0 if value is None else value

    @property
    def hang_s(self) -> float | None:
        """How long ``fault=hang`` waits before answering normally (None = forever)."""
        return self._num("hang_s")

    @property
    def after(self) -> int:
        """Tokens sent before ``cut``/``malformed`` strikes (default 3)."""
        value = self._int("after")
        return 3 if value is None else max(0, value)

    @property
    def times(self) -> int | None:
        """Apply the fault to the first N matching requests only."""
        return self._int("times")

    @property
    def ttft_ms(self) -> float | None:
        """Per-request time-to-first-token override in milliseconds."""
        return self._num("ttft_ms")

    @property
    def tps(self) -> float | None:
        """Per-request tokens/second override (0 = unlimited)."""
        return self._num("tps")

    @property
    def tokens(self) -> int | None:
        """Per-request reply length override."""
        return self._int("tokens")


def parse_directives(text: str) -> Directives:
    """Parse ``"k=v;k=v"`` into :class:`Directives`, validating keys and values."""
    values: dict[str, str] = {}
    for item in text.split(";"):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not sep or name not in _KNOWN:
            raise DirectiveError(f"unknown simulator directive {item!r}")
        try:
            number = float(value) if name in _NUMERIC else int(value) if name in _INTEGER else 0
        except ValueError:
            raise DirectiveError(
                f"simulator directive {name} needs a number, got {value!r}"
            ) from None
        # Reject nan/inf/negatives: an infinite ttft would silently become an endless hang.
        if not math.isfinite(number) or number < 0:
            raise DirectiveError(f"simulator directive {name} must be finite and >= 0")
        if name == "fault" and value.lower() not in FAULTS:
            raise DirectiveError(f"unknown simulator fault {value!r}; known: {sorted(FAULTS)}")
        values[name] = value.lower() if name == "fault" else value
    return Directives(raw=";".join(f"{k}={v}" for k, v in values.items()), values=values)


def extract_directives(header: str | None, texts: Iterable[str]) -> Directives | None:
    """Collect directives from magic strings in ``texts`` then the header (header wins)."""
    chunks = [m.group(1) for text in texts for m in MAGIC_RE.finditer(text)]
    if header:
        chunks.append(header)
    if not chunks:
        return None
    return parse_directives(";".join(chunks))


@dataclass
class Decision:
    """What to do with one request: an optional fault plus effective timing/length."""

    fault: str | None = None
    directives: Directives = field(default_factory=Directives)
    ttft_ms: float = 0.0
    tps: float = 0.0
    tokens: int | None = None


class SimState:
    """In-memory simulator state: ``times`` counters, standing faults and stats."""

    def __init__(self, ttft_ms: float = 0.0, tokens_per_s: float = 0.0) -> None:
        self.ttft_ms = float(ttft_ms)
        self.tokens_per_s = float(tokens_per_s)
        self.counters: Counter[tuple[str, str]] = Counter()
        self.standing: dict[str, Directives] = {}
        self.stats: Counter[tuple[str, str, str]] = Counter()
        self.models_seen: set[str] = set()

    def _fault_applies(self, d: Directives, model: str, scope: str) -> bool:
        if not d.fault:
            return False
        if d.times is None:
            return True
        # Counted per (key-or-directive-text, model) so one prompt can fail N times per target.
        slot = (scope + (d.key or d.raw), model)
        self.counters[slot] += 1
        return self.counters[slot] <= d.times

    def decide(self, model: str, request: Directives | None) -> Decision:
        """Resolve request directives and standing faults into a :class:`Decision`."""
        self.models_seen.add(model)
        decision = Decision(ttft_ms=self.ttft_ms, tps=self.tokens_per_s)
        layers = []
        standing = self.standing.get(model) or self.standing.get("*")
        if standing is not None:
            layers.append(("standing:", standing))
        if request is not None:
            layers.append(("", request))  # applied last: per-request directives win
        for scope, d in layers:
            # ``model=`` scopes the whole directive set, so a prompt can target one model.
            if d.model is not None and d.model != model:
                continue
            decision.ttft_ms = d.ttft_ms if d.ttft_ms is not None else decision.ttft_ms
            decision.tps = d.tps if d.tps is not None else decision.tps
            decision.tokens = d.tokens if d.tokens is not None else decision.tokens
            if self._fault_applies(d, model, scope):
                decision.fault, decision.directives = d.fault, d
        return decision

    def known_models(self) -> list[str]:
        """Default models plus every model requested so far, sorted."""
        return sorted(set(DEFAULT_MODELS) | self.models_seen)

    def record(self, api: str, model: str, outcome: str) -> None:
        """Count one request for (api, model) with its outcome (``ok`` or the fault)."""
        self.stats[(api, model, outcome)] += 1

    def install(self, model: str, directives: str) -> Directives:
        """Install a standing fault for ``model`` (``*`` = every model)."""
        parsed = parse_directives(directives)
        self.standing[model] = parsed
        # A fresh install starts a fresh ``times`` budget, even for identical directives.
        self.counters = Counter(
            {
                slot: n
                for slot, n in self.counters.items()
                if not (slot[0].startswith("standing:") and model in ("*", slot[1]))
            }
        )
        return parsed

    def clear_faults(self, model: str | None = None) -> None:
        """Remove standing faults (one model, or all) and their ``times`` counters."""
        if model is None:
            self.standing.clear()
            self.counters = Counter(
                {k: v for k, v in self.counters.items() if not k[0].startswith("standing:")}
            )
        else:
            self.standing.pop(model, None)

    def reset(self) -> None:
        """Clear stats, ``times`` counters, standing faults and the seen-models list."""
        self.models_seen.clear()
        self.standing.clear()
        self.counters.clear()
        self.stats.clear()

    def snapshot(self) -> dict[str, Any]:
        """Return stats as ``{total, outcomes, apis: {api: {model: {total, outcomes}}}}``."""
        outcomes: Counter[str] = Counter()
        apis: dict[str, dict[str, dict[str, Any]]] = {}
        for (api, model, outcome), n in sorted(self.stats.items()):
            outcomes[outcome] += n
            entry = apis.setdefault(api, {}).setdefault(model, {"total": 0, "outcomes": {}})
            entry["total"] += n
            entry["outcomes"][outcome] = entry["outcomes"].get(outcome, 0) + n
        return {"total": sum(outcomes.values()), "outcomes": dict(outcomes), "apis": apis}
