"""Completion webhooks: per-user signing secrets, Standard Webhooks signatures, SSRF-safe delivery.

    secret_for / rotate_secret   the user's `whsec_…` signing secret (created on first use)
    payload + sign               one delivery's body and its `webhook-*` headers
    resolve_target               DNS once, every address checked: (ip, port, host) or WebhookTargetRefused
    deliver                      one POST to that checked IP (no second lookup), the status code back
    check_callback_url           the same check when a job or batch is submitted (422 early)

A callback URL is chosen by the client, so it is a request the platform makes
on their behalf from inside our network. `resolve_target` refuses any URL whose
name resolves to *any* loopback, private, link-local, CGNAT, multicast,
reserved or metadata address, and `deliver` then connects to the address that
was checked — never the name, which a rebinding DNS server could answer
differently a millisecond later. Operators open holes with
`SWITCHYARD_WEBHOOK_ALLOW_HOSTS` (names, IPs or CIDRs). See docs/webhooks.md.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import secrets
import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import anyio
import httpx
import msgspec
from psycopg import AsyncConnection
from psycopg.rows import kwargs_row
from standardwebhooks import Webhook

from jobs.errors import WebhookDeliveryFailed, WebhookTargetRefused
from jobs.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Every secret starts with this (Standard Webhooks' convention; the rest is base64 of the key).
SECRET_PREFIX = "whsec_"
#: Bytes of a new signing key.
SECRET_BYTES = 24
USER_AGENT = "Switchyard-Webhooks/1"

#: Cloud instance-metadata endpoints (AWS/GCP/Azure/OpenStack, and AWS's IPv6 one): never reachable
#: through a hostname or a CIDR on the allow-list, only by listing the exact address.
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
#: Carrier-grade NAT (RFC 6598): not "private" to the `ipaddress` module, but not the internet either.
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
#: The well-known NAT64 prefix (RFC 6052): the last 32 bits are an IPv4 address.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


# --- Secrets -------------------------------------------------------------------------------------------------


class WebhookSecret(msgspec.Struct, frozen=True, kw_only=True):
    """A user's signing secret."""

    secret: str
    created_at: datetime


def new_secret() -> str:
    """A fresh `whsec_<base64 of 24 random bytes>`."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


async def current_secret(conn: AsyncConnection[Any], user_id: UUID) -> WebhookSecret:
    """The user's secret, created on first use (two racing first uses agree on one)."""
    async with conn.cursor(row_factory=kwargs_row(WebhookSecret)) as cur:
        await cur.execute("SELECT secret, created_at FROM webhook_secrets WHERE user_id = %s", (user_id,))
        if (found := await cur.fetchone()) is not None:
            return found
        # A concurrent first use may insert between our SELECT and INSERT: DO NOTHING waits for it to
        # commit, and the SELECT after it (a new snapshot) sees whichever row won.
        await cur.execute("INSERT INTO webhook_secrets (user_id, secret) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                          (user_id, new_secret()))
        await cur.execute("SELECT secret, created_at FROM webhook_secrets WHERE user_id = %s", (user_id,))
        row = await cur.fetchone()
    assert row is not None
    return row


async def secret_for(conn: AsyncConnection[Any], user_id: UUID) -> str:
    """The user's `whsec_…` signing secret, created on first use."""
    return (await current_secret(conn, user_id)).secret


async def rotate(conn: AsyncConnection[Any], user_id: UUID) -> WebhookSecret:
    """Replace the user's secret; deliveries from now on are signed with the new one only."""
    async with conn.cursor(row_factory=kwargs_row(WebhookSecret)) as cur:
        await cur.execute(
            """
            INSERT INTO webhook_secrets (user_id, secret) VALUES (%s, %s)
            ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret, created_at = now()
            RETURNING secret, created_at
            """,
            (user_id, new_secret()),
        )
        row = await cur.fetchone()
    assert row is not None
    return row


async def rotate_secret(conn: AsyncConnection[Any], user_id: UUID) -> str:
    """Replace the user's secret and return the new one."""
    return (await rotate(conn, user_id)).secret


# --- Body and signature ----------------------------------------------------------------------------------------


def payload(type: str, timestamp: datetime, data: dict[str, Any]) -> str:
    """The JSON body of one delivery: `{"type", "timestamp", "data"}`."""
    at = timestamp.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return msgspec.json.encode({"type": type, "timestamp": at, "data": data}).decode()


def sign(secret: str, webhook_id: str, timestamp: datetime, body: str) -> dict[str, str]:
    """The headers of one delivery: Standard Webhooks' `webhook-id`, `-timestamp` and `-signature`."""
    at = timestamp.astimezone(UTC)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(webhook_id, at, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


# --- The SSRF guard ---------------------------------------------------------------------------------------------


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (IPv4-mapped, 6to4, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    return None


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why a callback may not reach `ip` (e.g. "loopback"), or None for a public address."""
    if ip in METADATA_ADDRESSES:
        return "cloud metadata"
    if isinstance(ip, ipaddress.IPv6Address) and (v4 := _embedded_ipv4(ip)) is not None:
        reason = forbidden_reason(v4)
        return f"{reason}, embedded in IPv6" if reason else None
    checks = (
        ("unspecified", ip.is_unspecified), ("loopback", ip.is_loopback), ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast), ("carrier-grade NAT", ip in _CGNAT), ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("site-local", isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local),
        # Whatever else IANA marks as not globally reachable (documentation ranges, benchmarking, ...).
        ("not globally reachable", not ip.is_global),
    )
    return next((name for name, hit in checks if hit), None)


@dataclass(frozen=True)
class AllowList:
    """`SWITCHYARD_WEBHOOK_ALLOW_HOSTS` parsed: host names, and networks (a bare IP is a one-address network)."""

    names: frozenset[str]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, allow: str) -> AllowList:
        """Parse the comma-separated setting."""
        names: set[str] = set()
        networks: list[IPNetwork] = []
        for item in (part.strip() for part in allow.split(",")):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item.strip("[]"), strict=False))
            except ValueError:
                names.add(item.lower().rstrip("."))
        return cls(frozenset(names), tuple(networks))

    def permits(self, host: str, ip: IPAddress) -> bool:
        """Whether the operator allowed `ip` (reached as `host`) although it is not public."""
        forms = {ip}
        if isinstance(ip, ipaddress.IPv6Address) and (v4 := _embedded_ipv4(ip)) is not None:
            forms.add(v4)  # `::ffff:10.0.0.1` is 10.0.0.1 to every rule below
        if forms & METADATA_ADDRESSES:
            # Only the exact address unlocks a metadata endpoint, never a name or a wide CIDR.
            return any(net.num_addresses == 1 and a in net for net in self.networks for a in forms)
        return host.lower().rstrip(".") in self.names or any(a in net for net in self.networks for a in forms)


def _parse_url(url: str) -> httpx.URL:
    """The URL, if it is one a callback may have (http(s), a host, no credentials)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise WebhookTargetRefused(f"the callback URL is not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise WebhookTargetRefused(f"callback URLs must be http or https, not {parsed.scheme or 'schemeless'}")
    if parsed.userinfo:
        raise WebhookTargetRefused("callback URLs may not carry credentials (user:password@)")
    if not parsed.host:
        raise WebhookTargetRefused("the callback URL has no host")
    return parsed


def host_of(url: str) -> str:
    """The host name of a callback URL (what an attempt records as its model), or "" if it has none."""
    try:
        return httpx.URL(url).host
    except (httpx.InvalidURL, TypeError, ValueError):
        return ""


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _addresses(host: str, port: int, timeout: float) -> list[IPAddress]:
    """Every address `host` resolves to, in resolver order."""
    if _is_ip(host):
        return [ipaddress.ip_address(host)]
    with anyio.fail_after(timeout):
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[IPAddress] = []
    for *_, sockaddr in infos:
        # A link-local IPv6 answer may carry a zone (`fe80::1%eth0`); the address itself is what counts.
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in found:
            found.append(ip)
    return found


async def resolve_target(url: str, allow: str, *, timeout: float = 5.0) -> tuple[str, int, str]:
    """Resolve a callback URL's host once and check every address it resolves to.

    Returns (the IP to connect to, the port, the host name for the `Host` header and TLS).

    Raises:
        WebhookTargetRefused: not http(s), credentials in the URL, or some address is not public
            (and neither the host nor the address is on the allow-list `allow`).
        OSError: the name does not resolve (`socket.gaierror`), or not within `timeout` (`TimeoutError`).
    """
    parsed = _parse_url(url)
    host = parsed.raw_host.decode("ascii")  # IDNA-encoded; IPv6 without brackets
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    addresses = await _addresses(host, port, timeout)
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, f"{host} has no addresses")
    allowed = AllowList.parse(allow)
    for ip in addresses:
        reason = forbidden_reason(ip)
        if reason and not allowed.permits(host, ip):
            via = "" if len(addresses) == 1 and _is_ip(host) else f" resolves to {ip}, which"
            raise WebhookTargetRefused(f"the callback host {host}{via} is not a public address ({reason}); "
                                       "callbacks go to public addresses only", host=host, address=str(ip))
    first = addresses[0]
    if isinstance(first, ipaddress.IPv6Address) and first.ipv4_mapped is not None:
        first = first.ipv4_mapped
    return str(first), port, host


async def check_callback_url(url: str, settings: Settings) -> None:
    """Refuse, at submission, a callback URL that delivery would refuse (or that does not resolve).

    Raises:
        WebhookTargetRefused: 422, with a message naming the host and the forbidden address.
    """
    try:
        await resolve_target(url, settings.webhook_allow_hosts, timeout=settings.webhook_timeout_seconds)
    except OSError as exc:
        raise WebhookTargetRefused(f"the callback host {host_of(url)!r} does not resolve: {exc}",
                                   host=host_of(url)) from None


# --- Delivery --------------------------------------------------------------------------------------------------


async def _drain(response: httpx.Response, limit: int, timeout: float) -> None:
    """Read at most `limit` bytes of the body (undecoded: no decompression bombs), within `timeout`."""
    received = 0
    with contextlib.suppress(httpx.HTTPError, TimeoutError):
        async with asyncio.timeout(timeout):
            async for chunk in response.aiter_raw():
                received += len(chunk)
                if received >= limit:
                    break


async def deliver(url: str, headers: dict[str, str], body: str, settings: Settings, *,
                  verify: ssl.SSLContext | bool = True) -> int:
    """POST `body` to `url` once, connecting to the address `resolve_target` checked; the status code.

    Redirects are not followed (a 3xx is returned like any other non-2xx). The whole exchange is
    bounded: connect, write and read each get `webhook_timeout_seconds`, the body read is capped at
    `webhook_max_response_bytes` and then the connection is closed. TLS verifies the URL's host name
    (sent as SNI) against httpx's default CA bundle, or `verify`'s.

    Raises:
        WebhookTargetRefused: the URL is refused (resolved again on every delivery).
        WebhookDeliveryFailed: no answer: the name did not resolve, the connection failed or timed out.
    """
    timeout = settings.webhook_timeout_seconds
    try:
        ip, port, host = await resolve_target(url, settings.webhook_allow_hosts, timeout=timeout)
    except OSError as exc:
        raise WebhookDeliveryFailed(f"{host_of(url)} does not resolve: {exc}", reason="dns") from None
    original = httpx.URL(url)
    pinned = original.copy_with(host=ip, port=port)
    extensions = {"sni_hostname": host} if original.scheme == "https" and host != ip else {}
    # trust_env=False: an HTTP(S)_PROXY would resolve the name again, on its own terms.
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=False,
                                 verify=verify) as client:
        request = client.build_request("POST", pinned, content=body.encode(), extensions=extensions,
                                       headers={**headers, "host": original.netloc.decode("ascii")})
        try:
            # Connect + write + read of the status line and headers, each within `timeout`.
            async with asyncio.timeout(3 * timeout):
                response = await client.send(request, stream=True)
        except (httpx.TimeoutException, TimeoutError):
            raise WebhookDeliveryFailed(f"{host} did not answer within {timeout:g} s", reason="timeout") from None
        except httpx.HTTPError as exc:
            raise WebhookDeliveryFailed(f"could not deliver to {host}: {type(exc).__name__}: {exc}",
                                        reason="connection") from None
        try:
            await _drain(response, settings.webhook_max_response_bytes, timeout)
        finally:
            await response.aclose()
    return response.status_code
