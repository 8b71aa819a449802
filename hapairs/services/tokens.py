"""API tokens: a random secret shown once; only its SHA-256 is stored. Issuing and
revoking one is recorded as a portal event (no pair): who, for whom, which prefix."""

from __future__ import annotations

import hashlib
import secrets

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from hapairs.choices import EventCode
from hapairs.models import ApiToken
from hapairs.services._common import actor_name, event_record

TOKEN_PREFIX = "mse_"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@transaction.atomic
def api_token_issue(*, user: AbstractBaseUser, by: AbstractBaseUser | None = None) -> str:
    """Issue a new token for the user, replacing any previous one; return it (shown once)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    _, created = ApiToken.objects.update_or_create(
        user=user, defaults={"key_hash": token_hash(token), "prefix": token[:12], "last_used_at": None}
    )
    event_record(
        code=EventCode.TOKEN_ISSUED,
        description=f"API token issued for {user.get_username()}",
        generated_by=actor_name(by),
        remarks=f"Token {token[:12]}…" + ("" if created else "; the previous token stops working."),
    )
    return token


def api_token_user(token: str):
    """The active user a token belongs to, or None. Records when it was last used."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 100:
        return None
    found = ApiToken.objects.select_related("user").filter(key_hash=token_hash(token)).first()
    if found is None or not found.user.is_active:
        return None
    now = timezone.now()
    if found.last_used_at is None or (now - found.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=found.pk).update(last_used_at=now)
    return found.user


@transaction.atomic
def api_token_revoke(*, user: AbstractBaseUser, by: AbstractBaseUser | None = None) -> bool:
    """Revoke the user's token, if they have one (recorded only then)."""
    held = ApiToken.objects.filter(user=user).first()
    if held is None or not ApiToken.objects.filter(pk=held.pk).delete()[0]:  # none, or revoked meanwhile
        return False
    event_record(
        code=EventCode.TOKEN_REVOKED,
        description=f"API token revoked for {user.get_username()}",
        generated_by=actor_name(by),
        remarks=f"Token {held.prefix}…",
    )
    return True
