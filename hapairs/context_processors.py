"""What every page's template is given besides Django's own."""

from __future__ import annotations

from functools import cached_property

from django.http import HttpRequest

from hapairs import health
from hapairs.roles import AUDIT, ROLE_PERMISSIONS


def _grants(role: str, permission: str) -> bool:
    wanted = ROLE_PERMISSIONS[role]
    return wanted == "__all__" or tuple(permission.split(".", 1)) in wanted


AUDIT_ROLES = frozenset(role for role in ROLE_PERMISSIONS if _grants(role, AUDIT))


def dependencies(request: HttpRequest) -> dict:
    """``broker_unavailable``: the banner every page shows while the task broker is down (asked
    at most every few seconds per process; see hapairs.health.broker_unavailable)."""
    return {"broker_unavailable": health.broker_unavailable(), "roles": Roles(request)}


class Roles:
    """The signed-in user's roles for the page's frame (who is signed in, which sections the
    menu offers), from one query of their groups when a template asks, instead of a lookup
    of every permission (two more queries on every page). The views still check each
    permission they need (roles.refusal)."""

    def __init__(self, request: HttpRequest) -> None:
        self._user = getattr(request, "user", None)

    @cached_property
    def names(self) -> list[str]:
        user = self._user
        if user is None or not user.is_authenticated:
            return []
        return sorted(user.groups.values_list("name", flat=True))

    @cached_property
    def may_audit(self) -> bool:
        user = self._user
        return bool(user is not None and user.is_authenticated and user.is_superuser) or bool(
            AUDIT_ROLES.intersection(self.names)
        )
