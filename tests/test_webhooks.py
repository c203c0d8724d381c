"""Completion webhooks: the SSRF guard, Standard Webhooks signatures, and delivery against real receivers.

The session stack allows callbacks to 127.0.0.2 only (`SWITCHYARD_WEBHOOK_ALLOW_HOSTS` in
tests/conftest.py); the receivers here listen there. Linux routes all of 127/8 to the loopback
interface, so a receiver on 127.0.0.1 is reachable too — and must never be reached.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import ssl
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from jobs.clients import Clients
from jobs.enqueue import submit
from jobs.errors import WebhookDeliveryFailed, WebhookTargetRefused
from jobs.kinds import WebhookInput, WebhookJob
from jobs.settings import Settings
from jobs.webhooks import check_callback_url, deliver, new_secret, payload, resolve_target, sign
from tests.conftest import Stack, User, chat_job, wait_for_status

# --- The SSRF guard -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "reason"), [
    ("http://127.0.0.1/hook", "loopback"),
    ("http://127.0.0.2:8080/hook", "loopback"),
    ("http://[::1]:8080/hook", "loopback"),
    ("http://10.1.2.3/", "private"),
    ("http://172.16.0.1/", "private"),
    ("https://192.168.1.1/", "private"),
    ("http://169.254.10.10/", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ("http://[fd00:ec2::254]/", "cloud metadata"),
    ("http://100.64.0.1/", "carrier-grade NAT"),
    ("http://100.127.255.254/", "carrier-grade NAT"),
    ("http://[::ffff:127.0.0.1]/", "loopback, embedded in IPv6"),
    ("http://[::ffff:10.0.0.1]/", "private, embedded in IPv6"),
    ("http://[2002:7f00:1::]/", "loopback, embedded in IPv6"),  # 6to4 of 127.0.0.1
    ("http://[fc00::1]/", "private"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://224.0.0.1/", "multicast"),
    ("http://240.0.0.1/", "private"),
    ("http://2130706433/", "loopback"),  # 127.0.0.1 as one number: the resolver reads it so
])
async def test_guard_refuses_non_public_addresses(url: str, reason: str) -> None:
    with pytest.raises(WebhookTargetRefused) as caught:
        await resolve_target(url, "")
    assert f"({reason})" in caught.value.message
    assert caught.value.status == 422 and caught.value.code == "webhook_target_refused"


async def test_hostname_resolving_to_loopback_is_refused_after_resolution() -> None:
    with pytest.raises(WebhookTargetRefused) as caught:
        await resolve_target("http://localhost:9/hook", "")
    assert "localhost resolves to" in caught.value.message and "(loopback)" in caught.value.message


@pytest.mark.parametrize("url", [
    "ftp://8.8.8.8/", "file:///etc/passwd", "gopher://8.8.8.8/", "javascript:alert(1)",
    "http://user:secret@8.8.8.8/", "http://user@8.8.8.8/", "http:///nohost", "not a url",
])
async def test_guard_refuses_other_schemes_credentials_and_junk(url: str) -> None:
    with pytest.raises(WebhookTargetRefused):
        await resolve_target(url, "")


async def test_public_addresses_are_accepted() -> None:
    assert await resolve_target("http://8.8.8.8/hook", "") == ("8.8.8.8", 80, "8.8.8.8")
    assert await resolve_target("https://[2606:4700:4700::1111]:8443/", "") == (
        "2606:4700:4700::1111", 8443, "2606:4700:4700::1111")
    # A public address embedded in IPv6 is judged by the IPv4 address, and reached as it.
    assert (await resolve_target("http://[::ffff:8.8.8.8]/", ""))[0] == "8.8.8.8"


async def test_allow_list_opens_names_addresses_and_cidrs_but_nothing_more() -> None:
    assert await resolve_target("http://127.0.0.2:81/", "127.0.0.2") == ("127.0.0.2", 81, "127.0.0.2")
    with pytest.raises(WebhookTargetRefused):
        await resolve_target("http://127.0.0.1:81/", "127.0.0.2")
    assert (await resolve_target("http://10.20.30.40/", "example.com, 10.0.0.0/8"))[0] == "10.20.30.40"
    with pytest.raises(WebhookTargetRefused):
        await resolve_target("http://192.168.0.1/", "10.0.0.0/8")
    ip, port, host = await resolve_target("http://LOCALHOST:9/", "localhost")  # by name, any case
    assert host == "localhost" and ip in ("127.0.0.1", "::1") and port == 9
    assert (await resolve_target("http://[::1]/", "::1/128"))[0] == "::1"
    # Metadata endpoints open only by their exact address, never through a name or a wide CIDR.
    assert (await resolve_target("http://169.254.1.1/", "169.254.0.0/16"))[0] == "169.254.1.1"
    with pytest.raises(WebhookTargetRefused):
        await resolve_target("http://169.254.169.254/", "169.254.0.0/16")
    assert (await resolve_target("http://169.254.169.254/", "169.254.169.254"))[0] == "169.254.169.254"
    with pytest.raises(WebhookTargetRefused):
        await resolve_target("http://[::ffff:169.254.169.254]/", "169.254.0.0/16")
    assert (await resolve_target("http://[::ffff:10.1.1.1]/", "10.0.0.0/8"))[0] == "10.1.1.1"


async def test_check_callback_url_refuses_early_with_422() -> None:
    settings = Settings(webhook_allow_hosts="127.0.0.2", webhook_timeout_seconds=2)
    await check_callback_url("http://127.0.0.2:9/hook", settings)
    await check_callback_url("https://8.8.8.8/hook", settings)
    for url in ("http://127.0.0.1:9/hook", "http://localhost/", "ftp://8.8.8.8/", "http://no-such-host.invalid/"):
        with pytest.raises(WebhookTargetRefused) as caught:
            await check_callback_url(url, settings)
        assert caught.value.status == 422


# --- Signatures -----------------------------------------------------------------------------------------------


def test_signature_verifies_with_the_standard_webhooks_library() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret.removeprefix("whsec_"))) == 24
    now = datetime.now(UTC)
    body = payload("job.succeeded", now, {"id": "abc", "status": "succeeded"})
    headers = sign(secret, "msg_1", now, body)
    assert headers["webhook-id"] == "msg_1" and headers["webhook-timestamp"] == str(int(now.timestamp()))
    assert headers["content-type"] == "application/json" and headers["user-agent"] == "Switchyard-Webhooks/1"
    event = Webhook(secret).verify(body, headers)
    assert event["type"] == "job.succeeded" and event["data"] == {"id": "abc", "status": "succeeded"}
    assert datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")) == now
    # The raw algorithm: base64(HMAC-SHA256(key, "<id>.<timestamp>.<body>")), key = base64-decoded secret.
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"msg_1.{headers['webhook-timestamp']}.{body}".encode(), hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(mac).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace("abc", "abd"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, {**headers, "webhook-id": "msg_2"})


# --- Receivers ------------------------------------------------------------------------------------------------


@dataclass
class Received:
    """One request a receiver got."""

    method: str
    path: str
    headers: dict[str, str]
    body: str


@dataclass
class Receiver:
    """A webhook receiver in a thread; `script` says how to answer each request (the last step repeats).

    Steps: an HTTP status ("200", "500"), "302" (a redirect to /redirected), "huge" (200 and an
    endless body), "hang" (answer nothing until well past the delivery timeout, then 200).
    """

    host: str
    script: list[str]
    received: list[Received] = field(default_factory=list)
    #: Bytes of a "huge" body written before the client hung up, if it did.
    cut_after: int | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    port: int = 0
    #: Serve HTTPS with this context (its SNI callback records the names clients asked for in `sni`).
    tls: ssl.SSLContext | None = None
    sni: list[str | None] = field(default_factory=list)

    def url(self, path: str = "/hook", host: str | None = None) -> str:
        return f"{'https' if self.tls else 'http'}://{host or self.host}:{self.port}{path}"

    def serve(self) -> ThreadingHTTPServer:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.received.append(Received(self.command, self.path, headers, body))
                step = receiver.script[min(len(receiver.received), len(receiver.script)) - 1]
                if step == "hang" and not receiver.stop.wait(3):
                    step = "200"
                if step == "302":
                    self.send_response(302)
                    self.send_header("location", receiver.url("/redirected"))
                    self.send_header("content-length", "0")
                    self.end_headers()
                elif step == "huge":
                    self._endless()
                else:
                    self.send_response(int(step))
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")

            def _endless(self) -> None:
                self.send_response(200)
                self.end_headers()  # no length: the body runs until the connection closes
                chunk, written = b"x" * 65_536, 0
                try:
                    while written < 2**30 and not receiver.stop.is_set():
                        self.wfile.write(chunk)
                        written += len(chunk)
                except OSError:
                    receiver.cut_after = written

            do_POST = do_GET = _answer

        server = ThreadingHTTPServer((self.host, 0), Handler)
        server.daemon_threads = True
        if self.tls:
            self.tls.sni_callback = lambda _sock, name, _ctx: self.sni.append(name)
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


@pytest.fixture
def receive() -> Iterator[Any]:
    """Start receivers: `receive("200")`, `receive("500", "200", host="127.0.0.1")`."""
    servers: list[tuple[Receiver, ThreadingHTTPServer]] = []

    def start(*script: str, host: str = "127.0.0.2", tls: ssl.SSLContext | None = None) -> Receiver:
        receiver = Receiver(host=host, script=list(script), tls=tls)
        servers.append((receiver, receiver.serve()))
        return receiver

    yield start
    for receiver, server in servers:
        receiver.stop.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
async def deliver_webhook(stack: Stack, user: User) -> AsyncIterator[Any]:
    """Submit a `webhook.deliver` job for `user` as the platform does: `await deliver_webhook(url)` -> job id."""
    clients = await Clients.connect(stack.settings, pool_size=(1, 2))

    async def deliver(url: str, **fields: Any) -> str:
        job = WebhookJob(input=WebhookInput(
            url=url, webhook_id=fields.pop("webhook_id", f"msg_{uuid.uuid4().hex}"),
            type=fields.pop("type", "job.succeeded"), subject=fields.pop("subject", "job_1"),
            data=fields.pop("data", {"id": "job_1", "object": "job", "status": "succeeded"})))
        return str((await submit(clients, job, owner_id=user.id)).job.id)

    try:
        yield deliver
    finally:
        await clients.close()


async def test_delivery_is_signed_with_the_users_secret(
    client: httpx.AsyncClient, receive: Any, deliver_webhook: Any
) -> None:
    receiver = receive("200")
    data = {"id": "job_42", "object": "job", "status": "succeeded", "result": {"content": "hi"}}
    job_id = await deliver_webhook(receiver.url(), type="job.succeeded", webhook_id="msg_signed", data=data)
    done = await wait_for_status(client, job_id)
    assert done["status"] == "succeeded", done
    assert done["kind"] == "webhook.deliver" and done["result"] == {"status_code": 200, "deliveries": 1}
    [attempt] = done["attempts"]
    assert attempt["provider"] == "webhook" and attempt["model"] == "127.0.0.2" and attempt["outcome"] == "ok"

    secret = (await client.get("/v1/webhooks/secret")).json()
    assert secret["object"] == "webhook_secret" and secret["secret"].startswith("whsec_")
    [got] = receiver.received
    assert got.method == "POST" and got.path == "/hook"
    assert got.headers["webhook-id"] == "msg_signed" and got.headers["user-agent"] == "Switchyard-Webhooks/1"
    assert got.headers["host"] == f"127.0.0.2:{receiver.port}" and got.headers["content-type"] == "application/json"
    event = Webhook(secret["secret"]).verify(got.body, got.headers)
    assert event["type"] == "job.succeeded" and event["data"] == data
    assert abs(datetime.fromisoformat(event["timestamp"]).timestamp() - time.time()) < 60


async def test_secret_is_created_once_per_user_and_rotates(
    client: httpx.AsyncClient, stack: Stack, other_user: User
) -> None:
    first, again = [(await client.get("/v1/webhooks/secret")).json() for _ in range(2)]
    assert first == again
    async with httpx.AsyncClient(base_url=stack.api_url, headers={"Authorization": f"Bearer {other_user.key}"}) as c:
        theirs = (await c.get("/v1/webhooks/secret")).json()
    assert theirs["secret"] != first["secret"]
    rotated = await client.post("/v1/webhooks/secret/rotate")
    assert rotated.status_code == 200
    assert rotated.json()["secret"] not in (first["secret"], theirs["secret"])
    assert (await client.get("/v1/webhooks/secret")).json() == rotated.json()
    assert (await client.get("/v1/webhooks/secret", headers={"Authorization": ""})).status_code == 401


async def test_concurrent_first_uses_agree_on_one_secret(client: httpx.AsyncClient) -> None:
    answers = await asyncio.gather(*[client.get("/v1/webhooks/secret") for _ in range(8)])
    assert len({r.json()["secret"] for r in answers}) == 1


async def test_receiver_failing_twice_then_accepting_gets_three_deliveries_with_one_id(
    client: httpx.AsyncClient, receive: Any, deliver_webhook: Any
) -> None:
    receiver = receive("500", "500", "200")
    done = await wait_for_status(client, await deliver_webhook(receiver.url(), webhook_id="msg_retry"))
    assert done["status"] == "succeeded", done
    assert done["result"] == {"status_code": 200, "deliveries": 3}
    assert [a["outcome"] for a in done["attempts"]] == ["error", "error", "ok"]
    assert done["attempts"][0]["error_code"] == "webhook_delivery_failed"
    assert "HTTP 500" in done["attempts"][0]["error_message"]
    assert [r.headers["webhook-id"] for r in receiver.received] == ["msg_retry"] * 3
    secret = (await client.get("/v1/webhooks/secret")).json()["secret"]
    for got in receiver.received:  # each delivery is signed afresh, and each verifies
        Webhook(secret).verify(got.body, got.headers)


async def test_redirects_are_not_followed(client: httpx.AsyncClient, receive: Any, deliver_webhook: Any,
                                          stack: Stack) -> None:
    receiver = receive("302")
    done = await wait_for_status(client, await deliver_webhook(receiver.url()))
    assert done["status"] == "failed" and done["error"]["code"] == "webhook_delivery_failed", done
    assert len(receiver.received) == stack.settings.webhook_max_attempts
    assert {r.path for r in receiver.received} == {"/hook"}  # never /redirected
    assert "HTTP 302 (redirects are not followed)" in done["attempts"][0]["error_message"]


async def test_huge_response_is_cut_after_the_limit_and_the_delivery_counts(
    client: httpx.AsyncClient, receive: Any, deliver_webhook: Any
) -> None:
    receiver = receive("huge")
    done = await wait_for_status(client, await deliver_webhook(receiver.url()))
    assert done["status"] == "succeeded" and done["result"] == {"status_code": 200, "deliveries": 1}, done
    for _ in range(100):  # the server thread notices the hang-up on its next write
        if receiver.cut_after is not None:
            break
        await asyncio.sleep(0.05)
    # The client hung up after 64 KiB; what the server wrote before noticing is kernel socket buffers.
    assert receiver.cut_after is not None and receiver.cut_after < 64 * 2**20


async def test_hanging_receiver_times_out_and_is_retried(
    client: httpx.AsyncClient, receive: Any, deliver_webhook: Any
) -> None:
    receiver = receive("hang", "200")
    done = await wait_for_status(client, await deliver_webhook(receiver.url()))
    assert done["status"] == "succeeded" and done["result"]["deliveries"] == 2, done
    first = done["attempts"][0]
    assert first["outcome"] == "error" and "did not answer within 1 s" in first["error_message"]
    assert 900 <= first["latency_ms"] < 3000  # SWITCHYARD_WEBHOOK_TIMEOUT_SECONDS=1


async def test_receiver_that_never_accepts_fails_the_job_after_max_attempts(
    client: httpx.AsyncClient, receive: Any, deliver_webhook: Any, stack: Stack
) -> None:
    receiver = receive("500")
    done = await wait_for_status(client, await deliver_webhook(receiver.url()))
    attempts = stack.settings.webhook_max_attempts
    assert done["status"] == "failed" and done["error"]["code"] == "webhook_delivery_failed", done
    assert done["error"]["deliveries"] == attempts and len(receiver.received) == attempts
    assert [a["outcome"] for a in done["attempts"]] == ["error"] * attempts


async def test_callback_to_a_loopback_address_that_is_not_allowed_is_refused(
    client: httpx.AsyncClient, receive: Any, deliver_webhook: Any
) -> None:
    receiver = receive("200", host="127.0.0.1")
    done = await wait_for_status(client, await deliver_webhook(receiver.url()))
    assert done["status"] == "failed" and done["error"]["code"] == "webhook_target_refused", done
    assert "(loopback)" in done["error"]["message"]
    [attempt] = done["attempts"]  # refused at once: no retries
    assert attempt["error_code"] == "webhook_target_refused"
    await asyncio.sleep(0.2)
    assert receiver.received == []


async def test_unreachable_receiver_is_retried_then_fails(
    client: httpx.AsyncClient, deliver_webhook: Any, stack: Stack
) -> None:
    # Nothing listens on port 9 of 127.0.0.2: every connection is refused.
    done = await wait_for_status(client, await deliver_webhook("http://127.0.0.2:9/hook"))
    assert done["status"] == "failed" and done["error"]["code"] == "webhook_delivery_failed", done
    assert len(done["attempts"]) == stack.settings.webhook_max_attempts
    assert "could not deliver to 127.0.0.2" in done["attempts"][0]["error_message"]



async def _received(receiver: Receiver, count: int = 1, timeout: float = 30) -> list[Received]:
    deadline = time.monotonic() + timeout
    while len(receiver.received) < count:
        assert time.monotonic() < deadline, f"the receiver got {len(receiver.received)} of {count} deliveries"
        await asyncio.sleep(0.05)
    return receiver.received


async def test_chat_job_with_callback_url_delivers_its_end(client: httpx.AsyncClient, receive: Any) -> None:
    receiver = receive("200")
    job = (await client.post("/v1/jobs", json={**chat_job("Tell me a story"), "callback_url": receiver.url()})).json()
    done = await wait_for_status(client, job["id"])
    assert done["status"] == "succeeded", done
    [got] = await _received(receiver)
    secret = (await client.get("/v1/webhooks/secret")).json()["secret"]
    event = Webhook(secret).verify(got.body, got.headers)
    assert event["type"] == "job.succeeded"
    assert event["data"]["id"] == job["id"] and event["data"]["status"] == "succeeded"
    assert event["data"]["result"]["content"] == done["result"]["content"]
    assert got.headers["webhook-id"] == f"msg_{uuid.UUID(job['id']).hex}"
    [hook] = (await client.get("/v1/jobs", params={"kind": "webhook.deliver"})).json()["data"]
    hook = await wait_for_status(client, hook["id"])
    assert hook["status"] == "succeeded" and hook["result"] == {"status_code": 200, "deliveries": 1}


async def test_failed_job_with_callback_url_delivers_job_failed(client: httpx.AsyncClient, receive: Any) -> None:
    receiver = receive("200")
    job = (await client.post("/v1/jobs", json={**chat_job("[[sim: fault=400]] bad"),
                                               "callback_url": receiver.url()})).json()
    done = await wait_for_status(client, job["id"])
    assert done["status"] == "failed", done
    [got] = await _received(receiver)
    event = json.loads(got.body)
    assert event["type"] == "job.failed" and event["data"]["id"] == job["id"]
    assert event["data"]["error"]["code"] == done["error"]["code"]

def test_payload_is_the_documented_shape() -> None:
    now = datetime(2025, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
    assert json.loads(payload("batch.completed", now, {"id": "batch_1"})) == {
        "type": "batch.completed", "timestamp": "2025-01-02T03:04:05.678000Z", "data": {"id": "batch_1"}}


# --- TLS to the pinned address ----------------------------------------------------------------------------------


def _tls_pair(tmp: Any, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for `name`, and a client context trusting only its CA."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def cert(subject: str, key: Any, issuer: str, issuer_key: Any, ca: bool) -> Any:
        now = datetime.now(UTC)
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now.replace(year=now.year - 1)).not_valid_after(now.replace(year=now.year + 1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = cert("Switchyard test CA", ca_key, "Switchyard test CA", ca_key, ca=True)
    leaf = cert(name, leaf_key, "Switchyard test CA", ca_key, ca=False)
    pem = serialization.Encoding.PEM
    (tmp / "leaf.pem").write_bytes(leaf.public_bytes(pem) + leaf_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp / "leaf.pem")
    client = ssl.create_default_context(cadata=ca.public_bytes(pem).decode())
    return server, client


@pytest.mark.parametrize(("cert_name", "accepted"), [("localhost", True), ("elsewhere.test", False)])
async def test_https_to_the_pinned_address_verifies_the_real_host_name(
    receive: Any, tmp_path: Any, cert_name: str, accepted: bool
) -> None:
    ip, _, _ = await resolve_target("http://localhost/", "localhost")
    server_tls, client_tls = _tls_pair(tmp_path, cert_name)
    receiver = receive("200", host=ip, tls=server_tls)
    settings = Settings(webhook_allow_hosts="localhost", webhook_timeout_seconds=2)
    url = receiver.url(host="localhost")
    headers = sign(new_secret(), "msg_tls", datetime.now(UTC), "{}")
    if accepted:
        assert await deliver(url, headers, "{}", settings, verify=client_tls) == 200
        assert receiver.received[0].headers["host"] == f"localhost:{receiver.port}"
    else:  # the certificate is for another name: verification fails, nothing is sent
        with pytest.raises(WebhookDeliveryFailed):
            await deliver(url, headers, "{}", settings, verify=client_tls)
        assert receiver.received == []
    assert receiver.sni == ["localhost"]  # connected to the IP, but asked for (and verified) the name


async def test_a_callback_to_a_forbidden_address_is_refused_at_submission(client: httpx.AsyncClient) -> None:
    refused = await client.post("/v1/jobs", json={**chat_job("never"), "callback_url": "http://127.0.0.1:9/hook"})
    assert refused.status_code == 422 and refused.json()["code"] == "webhook_target_refused"
    assert (await client.get("/v1/jobs")).json()["data"] == []
