"""Logging in to the dashboard: the API's lockout and password check, then the admin role; every outcome audited.

The steps are those of `POST /v1/auth/login` (`api/routes/auth.py`), over the
same `jobs/` functions: the attempt is counted by the shared `LoginGuard`
before the password is checked, an unknown email costs as much time as a wrong
password, an outdated hash is upgraded. Only then is the role looked at, so a
user's failed guesses lock the account for the dashboard and the API alike.

    admin.login          an admin logged in
    admin.login_failed   wrong email or password, a disabled account, or not an admin (`reason`)
"""

from __future__ import annotations

from jobs.accounts import MAX_EMAIL, Principal, login_record, normalize_email, set_password_hash
from jobs.audit import audit
from jobs.clients import Clients
from jobs.errors import AccountDisabled, Forbidden, InvalidCredentials, LoginLocked
from jobs.lockout import LoginGuard
from jobs.passwords import MAX_PASSWORD, verify_password


async def _refused(clients: Clients, email: str, ip: str, reason: str, actor: Principal | None = None) -> None:
    async with clients.pool.connection() as conn:
        await audit(conn, "admin.login_failed", actor_id=actor.user_id if actor else None,
                    target=f"email:{normalize_email(email)}", ip=ip, reason=reason)


async def log_in(clients: Clients, email: str, password: str, ip: str) -> Principal:
    """The admin whose email and password these are.

    Raises:
        LoginLocked: too many failures for the account or from `ip` (429, with `retry_after`).
        InvalidCredentials: unknown email or wrong password alike.
        AccountDisabled: the account is disabled.
        Forbidden: the user is not an admin.
    """
    if not email or len(email) > MAX_EMAIL or len(password) > MAX_PASSWORD:
        raise InvalidCredentials("wrong email or password")
    guard = LoginGuard(clients.redis, clients.settings)
    if wait := await guard.begin(email, ip):
        raise LoginLocked(f"too many failed logins; try again in {wait} s", retry_after=wait)
    async with clients.pool.connection() as conn:
        record = await login_record(conn, email)
    # No connection is held while argon2 works.
    ok, rehash = await verify_password(password, record.password_hash if record else None)
    if record is None or not ok:
        await _refused(clients, email, ip, "invalid_credentials")
        raise InvalidCredentials("wrong email or password")
    await guard.succeeded(email, ip)
    user = record.user
    principal = Principal(user_id=user.id, email=user.email, role=user.role, tier=user.tier)
    if rehash:
        async with clients.pool.connection() as conn:
            await set_password_hash(conn, user.id, rehash)
    if record.disabled:
        await _refused(clients, email, ip, "account_disabled", principal)
        raise AccountDisabled("this account is disabled")
    if not principal.is_admin:
        await _refused(clients, email, ip, "not_admin", principal)
        raise Forbidden("the dashboard is for admins only")
    async with clients.pool.connection() as conn:
        await audit(conn, "admin.login", actor_id=user.id, target=f"user:{user.id}", ip=ip)
    return principal
