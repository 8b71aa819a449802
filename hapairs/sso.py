"""The single sign-on backends (mseportal.ssoconf reads their settings).

Both give a signed-in user exactly one of the portal's roles, from their directory or IdP
groups, at every sign-in (a group taken away in the directory takes the role away at the
next one). Both leave local accounts alone: a user with a password of their own is a
break-glass account, signed in by Django's ModelBackend only, never taken over by a
directory or IdP user of the same name. Accounts made here have no usable password.

A refusal says why on the login page (a message), without saying whether a user name
exists: "in none of the portal's groups", "a local account", "the directory did not answer".
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import SuspiciousOperation
from django.db import transaction

from hapairs.roles import ROLES
from mseportal.ssoconf import role_for

log = logging.getLogger(__name__)

NO_GROUP = (
    "You signed in, but your account is in none of the groups that give a role in this portal. Ask an administrator."
)
LOCAL_ACCOUNT = "That user name belongs to a local account of this portal: sign in with its own password."
DIRECTORY_DOWN = "The directory did not answer; try again, or use a local account."


def set_role(user, role: str) -> None:
    """Give ``user`` exactly ``role`` among the portal's roles (other groups are kept)."""
    with transaction.atomic():
        keep = user.groups.exclude(name__in=ROLES)
        user.groups.set([*keep, Group.objects.get(name=role)])


def strip_roles(username: str) -> None:
    """A directory or IdP user refused for being in no role group loses the role an earlier
    sign-in gave (a local account is never touched)."""
    for user in get_user_model().objects.filter(username=username):
        if not user.has_usable_password():
            user.groups.remove(*Group.objects.filter(name__in=ROLES))


def _refuse(request, text: str) -> None:
    if request is not None and hasattr(request, "_messages"):
        messages.error(request, text, fail_silently=True)


try:
    from django_auth_ldap.backend import LDAPBackend, ldap_error
except ImportError:  # the optional extra (mseportal[ldap]) is not installed: settings refuse LDAP
    LDAPBackend = object  # type: ignore[assignment,misc]
    ldap_error = None


class DirectoryBackend(LDAPBackend):  # type: ignore[misc,valid-type]
    """django-auth-ldap, with the portal's role mapping and its local-account rule."""

    def get_or_build_user(self, username, ldap_user):
        user, built = super().get_or_build_user(username, ldap_user)
        if not built and user.has_usable_password():
            _refuse(getattr(ldap_user, "_request", None), LOCAL_ACCOUNT)
            raise ldap_user.AuthenticationFailed(f"{username} is a local account")
        return user, built

    def authenticate_ldap_user(self, ldap_user, password):
        user = super().authenticate_ldap_user(ldap_user, password)
        if user is None:
            return None
        groups = set(ldap_user.group_dns)
        role = role_for(groups, settings.MSEPORTAL_LDAP["ROLE_GROUPS"], casefold=True)
        if role is None:
            log.warning("LDAP user %s is in none of the role groups (groups: %s)", user.username, sorted(groups))
            strip_roles(user.username)
            _refuse(getattr(ldap_user, "_request", None), NO_GROUP)
            return None
        set_role(user, role)
        log.info("LDAP user %s signed in as %s", user.username, role)
        return user


if ldap_error is not None:

    def _directory_down(sender, context, user, request=None, exception=None, **kwargs):
        log.error("LDAP %s failed: %s", context, exception)
        _refuse(request, DIRECTORY_DOWN)

    ldap_error.connect(_directory_down, sender=DirectoryBackend, dispatch_uid="mseportal-ldap-error")


try:
    from mozilla_django_oidc.auth import OIDCAuthenticationBackend
except ImportError:  # pragma: no cover - a base dependency
    OIDCAuthenticationBackend = object  # type: ignore[assignment,misc]


class IdentityProviderBackend(OIDCAuthenticationBackend):  # type: ignore[misc,valid-type]
    """mozilla-django-oidc, matching users by the username claim (not by e-mail, which an
    IdP may let users change), with the portal's role mapping and its local-account rule."""

    @property
    def _cfg(self) -> dict:
        return settings.MSEPORTAL_OIDC

    def _username(self, claims) -> str:
        username = str(claims.get(self._cfg["USERNAME_CLAIM"]) or claims.get("sub") or "").strip()
        if not username or len(username) > 150:
            raise SuspiciousOperation("the IdP gave no usable user name")
        return username

    def _role(self, claims) -> str | None:
        groups = claims.get(self._cfg["GROUPS_CLAIM"]) or []
        if isinstance(groups, str):
            groups = [groups]
        return role_for({str(group) for group in groups}, self._cfg["ROLE_GROUPS"])

    def verify_claims(self, claims) -> bool:
        if self._role(claims) is None:
            log.warning("OIDC user %s is in none of the role groups", claims.get(self._cfg["USERNAME_CLAIM"]))
            strip_roles(self._username(claims))
            _refuse(self.request, NO_GROUP)
            return False
        return True

    def filter_users_by_claims(self, claims):
        users = get_user_model().objects.filter(username=self._username(claims))
        if any(user.has_usable_password() for user in users):
            _refuse(self.request, LOCAL_ACCOUNT)
            raise SuspiciousOperation("the IdP's user name is a local account's")
        return users

    def get_username(self, claims) -> str:
        return self._username(claims)

    def create_user(self, claims):
        user = get_user_model().objects.create_user(self._username(claims), email=claims.get("email") or "")
        return self.update_user(user, claims)

    def update_user(self, user, claims):
        role = self._role(claims)
        assert role is not None  # verify_claims refused the others
        fields = {"email": claims.get("email") or "", "first_name": claims.get("given_name") or ""}
        fields["last_name"] = claims.get("family_name") or ""
        changed = [name for name, value in fields.items() if getattr(user, name) != value[:150]]
        for name in changed:
            setattr(user, name, fields[name][:150])
        if changed:
            user.save(update_fields=changed)
        set_role(user, role)
        log.info("OIDC user %s signed in as %s", user.username, role)
        return user
