"""Fuzzing: the running API against the OpenAPI schema it serves (schemathesis), bounded for CI.

Every documented operation gets `MAX_EXAMPLES` generated requests as a user with credits (admin
routes included: as a user they must be 403), derandomized so a CI run is repeatable. Each response
must not be a 5xx, must have a documented status and content type, and must match the documented
body: errors are problem+json (OpenAI's error shape on the OpenAI-compatible routes) with a stable
`code` and the `request_id`. The same request without credentials must be 401 on every operation
but the public ones (`PUBLIC`), so a new route is authenticated unless it is listed there.

The cases are driven with `operation.as_strategy()` and hypothesis directly: schemathesis' lazy
pytest loader (`schemathesis.pytest.from_fixture`, needed because the schema only exists once the
session stack runs) does not work with pytest 9. The schema has no OpenAPI links, so there is no
stateful run (the test fails if links appear, so that one gets added).

Hostile inputs, table-driven: bodies, prompts, lists and queries past their limits, NULs that
PostgreSQL cannot store, and a WebSocket frame past the body limit, each refused with its stable
code while the user's ledger, balance and jobs stay untouched. (Oversize files and batches need
API processes with small limits: tests/test_files.py and tests/test_batches.py have them.)
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import psycopg
import pytest
import schemathesis
import websockets
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from tests.conftest import Stack, User

#: Generated requests per operation: ~60 operations, so the whole run stays around 20 s on 2 cores.
MAX_EXAMPLES = 8

#: Operations that answer without credentials; every other one must be 401 when anonymous.
PUBLIC = {
    ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/v1/models"),
    ("POST", "/v1/auth/register"), ("POST", "/v1/auth/login"), ("POST", "/v1/auth/refresh"),
    ("POST", "/v1/auth/logout"),
    # Payment providers sign their calls instead (HMAC of the body: tests/test_billing.py).
    ("POST", "/v1/billing/webhooks/{provider}"),
}

#: What every response is checked for (schemathesis' own). Left out: `positive_data_acceptance`, since
#: many schema-valid requests are refused on purpose (an unknown model, a prompt past the limit, a
#: callback to a private address), and `negative_data_rejection`, which only applies to negative mode.
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance]


def error_code(body: dict[str, Any]) -> tuple[str, str]:
    """`(code, request_id)` of an error body in either shape (problem+json, or OpenAI's `{"error": …}`)."""
    found = body.get("error", body)
    return found["code"], found["request_id"]


def fuzz_operation(operation: Any, stack: Stack, user: User) -> None:
    """Send `MAX_EXAMPLES` generated requests to one operation, with and without credentials."""
    key = (operation.method.upper(), operation.path)

    @given(case=operation.as_strategy())
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        case.call_and_validate(base_url=stack.api_url, headers={"Authorization": f"Bearer {user.key}"},
                               checks=CHECKS)
        if key in PUBLIC:
            return
        anonymous = case.call(base_url=stack.api_url)
        assert anonymous.status_code == 401, (
            f"{case.method} {case.formatted_path} without credentials: {anonymous.status_code} {anonymous.text}")
        code, request_id = error_code(anonymous.json())
        assert code == "unauthorized" and request_id, anonymous.text

    run()


@pytest.fixture
def api_schema(stack: Stack, no_lockouts: None) -> Any:
    """The schema the running API serves (the lockout fixture clears what fuzzed logins leave behind)."""
    return schemathesis.openapi.from_url(f"{stack.api_url}/docs/openapi.json")


def test_every_operation_survives_fuzzing_and_answers_as_documented(api_schema: Any, stack: Stack,
                                                                    user: User) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 50, "the schema lost its operations"
    assert {(op.method.upper(), op.path) for op in operations} >= PUBLIC, "a public operation is gone: update PUBLIC"
    links = [op.label for op in operations if any("links" in r for r in op.definition.raw["responses"].values())]
    assert not links, f"the schema has OpenAPI links now: add a stateful run (as_state_machine) for {links}"
    failures: list[str] = []
    for operation in operations:
        try:
            fuzz_operation(operation, stack, user)
        except (AssertionError, schemathesis.errors.SchemathesisError) as exc:
            failures.append(f"--- {operation.label}\n{exc}")
        except BaseExceptionGroup as group:  # schemathesis reports every distinct failure of a case together
            failures.append(f"--- {operation.label}\n{group}")
    assert not failures, f"{len(failures)} of {len(operations)} operations failed:\n" + "\n".join(failures)


def test_fuzzing_catches_an_undocumented_answer(stack: Stack, user: User) -> None:
    """The checks bite: with its 404 taken out of the schema, a request for no such job fails conformance."""
    raw = httpx.get(f"{stack.api_url}/docs/openapi.json").json()
    del raw["paths"]["/v1/jobs/{job_id}"]["get"]["responses"]["404"]
    operation = schemathesis.openapi.from_dict(raw)["/v1/jobs/{job_id}"]["GET"]
    case = operation.Case(path_parameters={"job_id": "no-such-job"})
    with pytest.raises(BaseExceptionGroup, match="Undocumented status code"):
        case.call_and_validate(base_url=stack.api_url, headers={"Authorization": f"Bearer {user.key}"},
                               checks=CHECKS)


# --- Hostile inputs: oversize and unstorable, refused with a stable code and nothing reserved ---------------------

MESSAGE = {"role": "user", "content": "x"}
#: Just over the 1 MiB body limit (SWITCHYARD_MAX_BODY_BYTES), in any field.
HUGE = "x" * (1_048_576 + 1)


def chat(content: str | list[dict[str, str]] = "hi", **extra: Any) -> dict[str, Any]:
    messages = content if isinstance(content, list) else [{"role": "user", "content": content}]
    return {"model": "sim-small", "messages": messages, **extra}


#: (what, method, path, body, status, code): each refused before anything is reserved or stored.
HOSTILE: list[tuple[str, str, str, dict[str, Any], int, str]] = [
    ("body over the limit", "POST", "/v1/jobs", {"kind": "chat.completion", "input": chat(HUGE)},
     413, "body_too_large"),
    ("body over the limit (OpenAI)", "POST", "/v1/chat/completions", chat(HUGE), 413, "body_too_large"),
    ("body over the limit (embeddings)", "POST", "/v1/embeddings", {"model": "t-embed", "input": HUGE},
     413, "body_too_large"),
    ("body over the limit (batch)", "POST", "/v1/batches",
     {"input_file_id": HUGE, "completion_window": "24h", "endpoint": "/v1/chat/completions"}, 413, "body_too_large"),
    ("body over the limit (keys)", "POST", "/v1/keys", {"name": HUGE}, 413, "body_too_large"),
    # 3 x 150k characters: each message under its cap, together over the 400k prompt limit.
    ("prompt over the limit (OpenAI)", "POST", "/v1/chat/completions",
     chat([{**MESSAGE, "content": "x" * 150_000}] * 3), 413, "prompt_too_large"),
    ("embedding inputs over the limit", "POST", "/v1/embeddings", {"model": "t-embed", "input": ["x" * 32_768] * 13},
     413, "prompt_too_large"),
    ("embedding job inputs over the limit", "POST", "/v1/jobs",
     {"kind": "embedding", "input": {"model": "t-embed", "input": ["x" * 32_768] * 13}}, 413, "prompt_too_large"),
    ("one message over its cap", "POST", "/v1/jobs", {"kind": "chat.completion", "input": chat("x" * 200_001)},
     400, "validation_error"),
    ("too many messages", "POST", "/v1/jobs", {"kind": "chat.completion", "input": chat([MESSAGE] * 257)},
     400, "validation_error"),
    ("max_tokens over the cap", "POST", "/v1/chat/completions", chat(max_tokens=32_769), 400, "validation_error"),
    ("too many embedding inputs", "POST", "/v1/embeddings", {"model": "t-embed", "input": ["x"] * 2049},
     400, "validation_error"),
    ("too much metadata", "POST", "/v1/jobs",
     {"kind": "chat.completion", "input": chat(), "metadata": {str(i): "v" for i in range(17)}},
     400, "validation_error"),
    ("search query over the limit", "POST", "/v1/search", {"query": "x" * 4_001}, 413, "query_too_long"),
    # A NUL can be sent (JSON's \u0000) but never stored: a 400, not a database error.
    ("NUL in a prompt", "POST", "/v1/jobs", {"kind": "chat.completion", "input": chat("a\u0000b")}, 400, "bad_request"),
    ("NUL in metadata", "POST", "/v1/jobs", {"kind": "chat.completion", "input": chat(), "metadata": {"k\u0000": "v"}},
     400, "bad_request"),
    ("NUL in a prompt (OpenAI)", "POST", "/v1/chat/completions", chat("a\u0000b"), 400, "bad_request"),
    ("NUL in a key name", "POST", "/v1/keys", {"name": "a\u0000b"}, 400, "bad_request"),
    ("NUL in a vector store name", "POST", "/v1/vector_stores", {"name": "a\u0000b"}, 400, "bad_request"),
    ("NUL in a search query", "POST", "/v1/search", {"query": "a\u0000b"}, 400, "bad_request"),
    ("NUL in an email", "POST", "/v1/auth/register", {"email": "a\u0000b@example.com", "password": "p" * 12},
     400, "bad_request"),
]


def ledger_of(stack: Stack, user: User) -> tuple[list[str], int, int, int]:
    """The kinds of the user's ledger rows, balance, reserved credits and number of jobs."""
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        kinds = [r[0] for r in conn.execute("SELECT kind FROM credit_ledger WHERE user_id = %s ORDER BY id",
                                            (user.id,)).fetchall()]
        balance, reserved = conn.execute("SELECT balance, reserved FROM credit_accounts WHERE user_id = %s",
                                         (user.id,)).fetchone() or (None, None)
        jobs = conn.execute("SELECT count(*) FROM jobs WHERE owner_id = %s", (user.id,)).fetchone()
    assert balance is not None and jobs is not None
    return kinds, balance, reserved, jobs[0]


async def test_hostile_inputs_are_refused_with_a_stable_code_and_nothing_is_reserved(
    client: httpx.AsyncClient, stack: Stack, user: User
) -> None:
    before = ledger_of(stack, user)
    assert before[0] == ["grant"] and before[2:] == (0, 0)
    for what, method, path, body, status, code in HOSTILE:
        resp = await client.request(method, path, json=body)
        assert resp.status_code == status, (what, resp.status_code, resp.text[:300])
        assert error_code(resp.json())[0] == code, (what, resp.text[:300])
    assert ledger_of(stack, user) == before


async def test_an_oversize_websocket_frame_closes_the_socket_and_the_api_carries_on(
    stack: Stack, user: User, client: httpx.AsyncClient
) -> None:
    # The streaming sockets only send: a client frame past the body limit is refused by the server
    # (1009 "message too big") instead of being buffered.
    url = stack.api_url.replace("http://", "ws://") + "/v1/events"
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {user.key}"},
                                  max_size=None) as ws:
        await ws.send(HUGE)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009, closed.value
    assert (await client.get("/v1/me")).status_code == 200
