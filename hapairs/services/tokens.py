"""API tokens: a random secret shown once; only its SHA-256 is stored. Issuing and
revoking one is recorded as a portal event (no pair): who, for whom, which prefix."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import logging
import secrets

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from hapairs.audit import audit_record, snapshot
from hapairs.choices import EventCode
from hapairs.models import ApiToken
from hapairs.services._common import ServiceError, actor_name, event_record

TOKEN_PREFIX = "mse_"
SCOPES = ("read", "operate", "admin")  # hapairs.roles.token_allows
log = logging.getLogger(__name__)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@transaction.atomic
def api_token_issue(
    *,
    user: AbstractBaseUser,
    by: AbstractBaseUser | None = None,
    scope: str = "admin",
    expires_days: int | None = None,
    networks: list[str] | tuple[str, ...] = (),
) -> str:
    """Issue a new token for the user, replacing any previous one; return it (shown once).
    ``scope`` caps it (read, operate, admin; never above the user's role), ``expires_days``
    ends it, ``networks`` (CIDRs) are the only client addresses it is taken from."""
    if scope not in SCOPES:
        raise ServiceError(f"Scope {scope!r}: one of {', '.join(SCOPES)}.", field="scope")
    if expires_days is not None and not 1 <= expires_days <= 3650:
        raise ServiceError("A token expires after 1 to 3650 days.", field="expires_days")
    try:
        nets = [str(ipaddress.ip_network(net.strip(), strict=False)) for net in networks if net.strip()]
    except ValueError as exc:
        raise ServiceError(f"Allowed networks: {exc}.", field="networks") from None
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    before = snapshot(ApiToken.objects.filter(user=user).first())
    expires_at = timezone.now() + dt.timedelta(days=expires_days) if expires_days else None
    row, created = ApiToken.objects.update_or_create(
        user=user,
        defaults={
            "key_hash": token_hash(token),
            "prefix": token[:12],
            "last_used_at": None,
            "scope": scope,
            "expires_at": expires_at,
            "allowed_networks": nets,
        },
    )
    event_record(
        code=EventCode.TOKEN_ISSUED,
        description=f"API token issued for {user.get_username()}",
        generated_by=actor_name(by),
        remarks=f"Token {token[:12]}…, scope {scope}"
        + (f", expires {expires_at:%Y-%m-%d}" if expires_at else "")
        + (f", from {', '.join(nets)} only" if nets else "")
        + ("" if created else "; the previous token stops working."),
    )
    row.refresh_from_db()
    audit_record("token.issue", target=row, before=before, after=snapshot(row), by=by, object_repr=str(row))
    return token


def api_token_user(token: str, client_ip: str | None = None):
    """The active user a token belongs to, or None: unknown, expired, or from an address
    outside its allowed networks (each logged, none said to the caller). The user comes
    back with ``token_scope`` set, which hapairs.roles applies. Records when it was last used."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 100:
        return None
    found = ApiToken.objects.select_related("user").filter(key_hash=token_hash(token)).first()
    if found is None or not found.user.is_active:
        return None
    now = timezone.now()
    if found.expires_at is not None and found.expires_at <= now:
        log.warning("API token %s… of %s refused: expired at %s", found.prefix, found.user, found.expires_at)
        return None
    if found.allowed_networks and not _address_in(client_ip, found.allowed_networks):
        log.warning(
            "API token %s… of %s refused from %s: outside %s",
            found.prefix,
            found.user,
            client_ip,
            found.allowed_networks,
        )
        return None
    if found.last_used_at is None or (now - found.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=found.pk).update(last_used_at=now)
    user = found.user
    user.token_scope = found.scope
    return user


def _address_in(client_ip: str | None, networks: list[str]) -> bool:
    try:
        address = ipaddress.ip_address(client_ip or "")
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net) for net in networks)


@transaction.atomic
def api_token_revoke(*, user: AbstractBaseUser, by: AbstractBaseUser | None = None) -> bool:
    """Revoke the user's token, if they have one (recorded only then)."""
    held = ApiToken.objects.filter(user=user).first()
    if held is None or not ApiToken.objects.filter(pk=held.pk).delete()[0]:  # none, or revoked meanwhile
        return False
    audit_record("token.revoke", target=held, before=snapshot(held), after=None, by=by, object_repr=str(held))
    event_record(
        code=EventCode.TOKEN_REVOKED,
        description=f"API token revoked for {user.get_username()}",
        generated_by=actor_name(by),
        remarks=f"Token {held.prefix}…",
    )
    return True
