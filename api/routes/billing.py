"""`/v1/billing/webhooks/{provider}`: payment webhooks (Stripe, Razorpay) that top up credits.

No API key: the HMAC signature over the raw body is the authentication, so
the body is read as bytes and never parsed before it is verified. A verified
payment becomes a `billing.topup` job whose idempotency key is the payment id
(`stripe:pi_…`), so a webhook delivered twice — or a Checkout session and its
payment intent both reported — makes one job, and the ledger reference makes
the credit once even if two jobs existed. Anything that must not be credited
but will never become creditable (an unknown user, an event we don't handle)
is acknowledged with 200 and `ignored`, so the provider stops retrying.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Request, post
from litestar.status_codes import HTTP_200_OK
from loguru import logger

from api.auth import client_ip
from api.state import Services
from jobs import payments
from jobs.accounts import user_exists
from jobs.audit import audit
from jobs.enqueue import submit
from jobs.errors import InvalidSignature, UnknownPaymentProvider, WebhookNotConfigured
from jobs.kinds import TopUpInput, TopUpJob
from jobs.payments import Ignored, Payment
from jobs.settings import Settings
from jobs.states import Kind


class WebhookAck(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The answer to a provider: always `received`; the job that credits it, or why nothing will."""

    received: bool
    job_id: str | None = None
    ignored: str | None = None


def _stripe(raw: bytes, request: Request[Any, Any, Any], settings: Settings) -> Payment | Ignored:
    payments.verify_stripe(raw, request.headers.get("stripe-signature"), settings.stripe_webhook_secret,
                           tolerance_seconds=settings.stripe_tolerance_seconds)
    return payments.parse_stripe(raw)


def _razorpay(raw: bytes, request: Request[Any, Any, Any], settings: Settings) -> Payment | Ignored:
    payments.verify_razorpay(raw, request.headers.get("x-razorpay-signature"), settings.razorpay_webhook_secret)
    return payments.parse_razorpay(raw)


#: provider -> (its secret, verify-then-parse).
_PROVIDERS: dict[str, tuple[Callable[[Settings], str],
                            Callable[[bytes, Request[Any, Any, Any], Settings], Payment | Ignored]]] = {
    "stripe": (lambda s: s.stripe_webhook_secret, _stripe),
    "razorpay": (lambda s: s.razorpay_webhook_secret, _razorpay),
}


async def _ignore(services: Services, request: Request[Any, Any, Any], payment: Payment, reason: str) -> WebhookAck:
    """Acknowledge a payment we will not credit, leaving an audit row for an operator to follow up."""
    logger.warning("{} payment {} not credited: {}", payment.provider, payment.payment_id, reason)
    async with services.pool.connection() as conn:
        await audit(conn, "billing.webhook_ignored", target=payment.metadata.get("user_id"),
                    ip=client_ip(request), reason=reason, provider=payment.provider,
                    payment_id=payment.payment_id, event_type=payment.event_type, amount=payment.amount,
                    currency=payment.currency)
    return WebhookAck(received=True, ignored=reason)


async def _payer_exists(services: Services, payment: Payment) -> bool:
    if payment.user_id is None:
        return False
    async with services.pool.connection() as conn:
        return await user_exists(conn, payment.user_id)


@post("/v1/billing/webhooks/{provider:str}", status_code=HTTP_200_OK, tags=["billing"],
      summary="Payment webhook (Stripe, Razorpay)")
async def receive_webhook(provider: str, request: Request[Any, Any, Any], services: Services) -> WebhookAck:
    """Verify a payment provider's signed event and top up the paying user's credits.

    `stripe` (`Stripe-Signature`; `checkout.session.completed`,
    `checkout.session.async_payment_succeeded`, `payment_intent.succeeded`) and
    `razorpay` (`X-Razorpay-Signature`; `payment.captured`). The user is
    metadata/notes `user_id`; credits are `credits` there, else amount ×
    `SWITCHYARD_CREDITS_PER_CURRENCY_UNIT`. 400 `invalid_signature` credits nothing;
    503 `webhook_not_configured` when the provider's secret is unset.
    """
    if provider not in _PROVIDERS:
        raise UnknownPaymentProvider(f"no webhook for {provider!r}; use one of {sorted(_PROVIDERS)}")
    secret_of, verify_and_parse = _PROVIDERS[provider]
    settings = services.settings
    if not secret_of(settings):
        raise WebhookNotConfigured(f"the {provider} webhook secret is not configured")
    raw = await request.body()
    try:
        event = verify_and_parse(raw, request, settings)
    except InvalidSignature as exc:
        logger.warning("{} webhook refused: {}", provider, exc.message)
        raise
    if isinstance(event, Ignored):
        logger.info("{} webhook ignored: {}", provider, event.reason)
        return WebhookAck(received=True, ignored=event.reason)
    if not await _payer_exists(services, event):
        return await _ignore(services, request, event, "unknown user")
    credits = payments.credits_for(event, settings.credits_per_currency_unit)
    if credits is None:
        return await _ignore(services, request, event, "invalid credits")
    assert event.user_id is not None
    topup = TopUpJob(input=TopUpInput(user_id=event.user_id, payment_id=event.payment_id, credits=credits,
                                      provider=event.provider, amount=event.amount, currency=event.currency))
    outcome = await submit(services, topup, owner_id=event.user_id,
                           idempotency_key=event.payment_id)
    if outcome.job.kind != Kind.BILLING_TOPUP:
        # The user spent this payment id as an Idempotency-Key of their own: submit without one;
        # the ledger reference still credits the payment once.
        outcome = await submit(services, topup, owner_id=event.user_id)
    logger.bind(job_id=str(outcome.job.id)).info("{} payment {} accepted ({} credits){}", provider,
                                                 event.payment_id, credits, "" if outcome.created else ", again")
    return WebhookAck(received=True, job_id=str(outcome.job.id))


#: Route handlers of this module, collected by api/routes/__init__.py.
ROUTES: list[Any] = [receive_webhook]
