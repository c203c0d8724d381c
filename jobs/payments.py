"""Payments: webhook signatures and the payment events they carry.

    verify_stripe / verify_razorpay    raise InvalidSignature (400) unless the raw body is signed
    parse_stripe / parse_razorpay      a Payment to credit, or Ignored (with the reason)
    Payment.user_id / credits_for      who gets credited, and how much (a `billing.topup` job, jobs/kinds.py)

Signatures are checked on the raw request body exactly as received: parsing
and re-encoding JSON changes bytes (spacing, key order, escapes) and breaks
the HMAC. Stripe signs `"{t}.{body}"` and puts `t` in the header, so an old
delivery replayed later is refused by its timestamp; Razorpay signs the body
alone (replays are harmless: crediting is idempotent by payment id).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any
from uuid import UUID

import msgspec

from jobs.errors import InvalidPayload, InvalidSignature
from jobs.kinds import MAX_CREDITS

# --- Signatures ------------------------------------------------------------------------------------------------


def _hmac_hex(secret: str, message: bytes) -> bytes:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest().encode()


def verify_stripe(raw: bytes, header: str | None, secret: str, *, tolerance_seconds: int,
                  now: float | None = None) -> None:
    """Check a `Stripe-Signature: t=<unix>,v1=<hex>[,v1=...]` header against the raw body.

    Raises:
        InvalidSignature: missing or malformed header, no matching `v1`, or `t` outside the tolerance.
    """
    if not header:
        raise InvalidSignature("missing Stripe-Signature header")
    timestamp, signatures = "", []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == "v1":
            signatures.append(value)
    if not timestamp.isdigit() or not signatures:
        raise InvalidSignature("malformed Stripe-Signature header: expected t=<unix time>,v1=<hex>")
    expected = _hmac_hex(secret, timestamp.encode() + b"." + raw)
    # Compare against every v1 (Stripe sends several while a secret is being rolled), in constant time.
    if not any(hmac.compare_digest(expected, s.encode()) for s in signatures):
        raise InvalidSignature("no v1 signature matches this body and the configured secret")
    age = (time.time() if now is None else now) - int(timestamp)
    if abs(age) > tolerance_seconds:
        raise InvalidSignature(f"signature timestamp is {int(age)} s off; the tolerance is {tolerance_seconds} s")


def verify_razorpay(raw: bytes, header: str | None, secret: str) -> None:
    """Check an `X-Razorpay-Signature` header (hex HMAC-SHA256 of the raw body).

    Raises:
        InvalidSignature: missing or wrong signature.
    """
    if not header:
        raise InvalidSignature("missing X-Razorpay-Signature header")
    if not hmac.compare_digest(_hmac_hex(secret, raw), header.strip().encode()):
        raise InvalidSignature("X-Razorpay-Signature does not match this body and the configured secret")


# --- Events ----------------------------------------------------------------------------------------------------


class Payment(msgspec.Struct, frozen=True, kw_only=True):
    """A completed payment, as read from a provider event."""

    provider: str
    #: `<provider>:<provider's payment id>`, e.g. `stripe:pi_...`: the ledger reference that makes crediting once.
    payment_id: str
    event_type: str
    #: In the currency's smallest unit (cents, paise).
    amount: int
    currency: str
    #: Stripe `metadata` / Razorpay `notes`: `user_id` (required) and `credits` (optional).
    metadata: dict[str, str] = {}

    @property
    def user_id(self) -> UUID | None:
        """The user to credit, from the metadata; None when absent or not a UUID."""
        try:
            return UUID(self.metadata.get("user_id", ""))
        except ValueError:
            return None


class Ignored(msgspec.Struct, frozen=True):
    """An event that is acknowledged but credits nothing."""

    reason: str


class _Envelope(msgspec.Struct):
    type: str = ""
    event: str = ""


class _StripeObject(msgspec.Struct):
    id: str
    currency: str = ""
    metadata: dict[str, str] = {}
    # checkout.session
    amount_total: int | None = None
    payment_intent: str | None = None
    payment_status: str | None = None
    # payment_intent
    amount_received: int | None = None


class _StripeData(msgspec.Struct):
    object: _StripeObject


class _StripeEvent(msgspec.Struct):
    type: str
    data: _StripeData


class _RazorpayPayment(msgspec.Struct):
    id: str
    amount: int
    currency: str = ""
    status: str = ""
    # Razorpay sends `[]` for empty notes (a PHP-ism), a dict otherwise.
    notes: dict[str, Any] | list[Any] = {}


class _RazorpayEntity(msgspec.Struct):
    entity: _RazorpayPayment


class _RazorpayPayload(msgspec.Struct):
    payment: _RazorpayEntity


class _RazorpayEvent(msgspec.Struct):
    event: str
    payload: _RazorpayPayload


#: Stripe events that mean "paid" (async methods complete with the second one).
STRIPE_EVENTS = frozenset({"checkout.session.completed", "checkout.session.async_payment_succeeded",
                           "payment_intent.succeeded"})
#: Razorpay events that mean "paid".
RAZORPAY_EVENTS = frozenset({"payment.captured"})

_envelope = msgspec.json.Decoder(_Envelope)
_stripe = msgspec.json.Decoder(_StripeEvent)
_razorpay = msgspec.json.Decoder(_RazorpayEvent)


def _decode(decoder: msgspec.json.Decoder[Any], raw: bytes) -> Any:
    try:
        return decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidPayload(f"unexpected event body: {exc}") from None


def parse_stripe(raw: bytes) -> Payment | Ignored:
    """The payment in a (verified) Stripe event body, or why it is ignored."""
    kind = _decode(_envelope, raw).type
    if kind not in STRIPE_EVENTS:
        return Ignored(kind or "untyped event")
    obj = _decode(_stripe, raw).data.object
    if kind.startswith("checkout.session."):
        if obj.payment_status != "paid":
            # An async payment method: `checkout.session.async_payment_succeeded` follows when it clears.
            return Ignored(f"payment_status {obj.payment_status}")
        # The payment intent id when there is one, so the session and its intent's event credit once.
        payment_id, amount = obj.payment_intent or obj.id, obj.amount_total
    else:
        payment_id, amount = obj.id, obj.amount_received
    return Payment(provider="stripe", payment_id=f"stripe:{payment_id}", event_type=kind, amount=amount or 0,
                   currency=obj.currency, metadata=obj.metadata)


def parse_razorpay(raw: bytes) -> Payment | Ignored:
    """The payment in a (verified) Razorpay event body, or why it is ignored."""
    kind = _decode(_envelope, raw).event
    if kind not in RAZORPAY_EVENTS:
        return Ignored(kind or "untyped event")
    entity = _decode(_razorpay, raw).payload.payment.entity
    notes = {str(k): str(v) for k, v in entity.notes.items()} if isinstance(entity.notes, dict) else {}
    return Payment(provider="razorpay", payment_id=f"razorpay:{entity.id}", event_type=kind,
                   amount=entity.amount, currency=entity.currency, metadata=notes)


def credits_for(payment: Payment, credits_per_currency_unit: int) -> int | None:
    """Credits a payment buys: metadata `credits` if present, else amount × rate; None when unusable."""
    raw = payment.metadata.get("credits")
    if raw is None:
        credits = payment.amount * credits_per_currency_unit
    else:
        try:
            credits = int(raw.strip())
        except ValueError:
            return None
    return credits if 0 < credits <= MAX_CREDITS else None
