"""Single sign-on from the environment: LDAP (django-auth-ldap) and OIDC
(mozilla-django-oidc), each optional, each mapping directory or IdP groups onto the
portal's three roles. Local accounts (those with a password of their own) stay for
break-glass: neither backend ever signs one of them in or changes it.

Parsed here, without Django, so that ``settings.py`` refuses a bad setting at start with a
sentence naming it (``ConfigError``), and the tests read the same rules.

* LDAP: ``MSEPORTAL_LDAP_URI`` turns it on. ``ldap://`` only to a loopback server unless
  ``MSEPORTAL_LDAP_START_TLS=1``: the user's password is in the bind.
* OIDC: ``MSEPORTAL_OIDC_CLIENT_ID`` turns it on. Every endpoint is ``https://`` unless it
  is on loopback: the client secret and the tokens cross them.
* ``MSEPORTAL_LDAP_ROLE_GROUPS`` / ``MSEPORTAL_OIDC_ROLE_GROUPS``: ``Role=group; ...``
  (a group's DN for LDAP, a value of the groups claim for OIDC). A user in none of them is
  refused; in several, the strongest role wins.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from mseportal.envconf import ConfigError

ROLES = ("Admin", "Operator", "Monitor")  # hapairs.roles.ROLES, strongest first
LDAP_GROUP_TYPES = ("groupOfNames", "groupOfUniqueNames", "posixGroup")


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def role_groups(environ: dict[str, str], name: str) -> dict[str, list[str]]:
    """``Admin=g1|g2; Operator=g3`` as {role: [group, ...]}: ``;`` between roles (an LDAP
    DN holds commas), ``|`` between groups of one role."""
    raw = (environ.get(name) or "").strip()
    if not raw:
        raise ConfigError(f"{name} is not set: name the groups that give Admin, Operator and Monitor.")
    mapping: dict[str, list[str]] = {}
    for item in raw.split(";"):
        if not item.strip():
            continue
        role, sep, groups = item.partition("=")
        role = role.strip()
        if not sep or role not in ROLES:
            raise ConfigError(f"{name}: {item.strip()!r} is not ROLE=GROUP (roles: {', '.join(ROLES)}).")
        if role in mapping:
            raise ConfigError(f"{name}: {role} is given twice.")
        names = [group.strip() for group in groups.split("|") if group.strip()]
        if not names:
            raise ConfigError(f"{name}: {role} names no group.")
        mapping[role] = names
    return mapping


def role_for(groups: set[str], mapping: dict[str, list[str]], *, casefold: bool = False) -> str | None:
    """The strongest role any of ``groups`` gives (None: none of them). LDAP DNs compare
    without case (``casefold``), as the directory does."""

    def norm(value: str) -> str:
        return value.casefold() if casefold else value

    held = {norm(group) for group in groups}
    for role in ROLES:
        if any(norm(group) in held for group in mapping.get(role, [])):
            return role
    return None


def ldap_settings(environ: dict[str, str]) -> dict[str, object]:
    """The django-auth-ldap settings (names without their ``AUTH_LDAP_`` prefix), plus
    ``ROLE_GROUPS``; {} when LDAP is off."""
    uri = (environ.get("MSEPORTAL_LDAP_URI") or "").strip()
    if not uri:
        return {}
    start_tls = (environ.get("MSEPORTAL_LDAP_START_TLS") or "").strip().lower() in {"1", "true", "yes", "on"}
    servers = uri.split()
    for server in servers:
        parts = urlsplit(server)
        if parts.scheme not in {"ldap", "ldaps"} or not parts.hostname:
            raise ConfigError(f"MSEPORTAL_LDAP_URI: {server!r} is not an ldap:// or ldaps:// URL with a host.")
        if parts.scheme == "ldap" and not start_tls and not _is_loopback(parts.hostname):
            raise ConfigError(
                f"MSEPORTAL_LDAP_URI: {server!r} would send passwords in cleartext: use ldaps:// "
                "or set MSEPORTAL_LDAP_START_TLS=1."
            )
    user_search = (environ.get("MSEPORTAL_LDAP_USER_SEARCH") or "").strip()
    if not user_search:
        raise ConfigError("MSEPORTAL_LDAP_USER_SEARCH is not set: the base DN the users are found under.")
    group_search = (environ.get("MSEPORTAL_LDAP_GROUP_SEARCH") or "").strip()
    if not group_search:
        raise ConfigError("MSEPORTAL_LDAP_GROUP_SEARCH is not set: the base DN the groups are found under.")
    group_type = (environ.get("MSEPORTAL_LDAP_GROUP_TYPE") or "groupOfNames").strip()
    if group_type not in LDAP_GROUP_TYPES:
        raise ConfigError(f"MSEPORTAL_LDAP_GROUP_TYPE={group_type!r}: one of {', '.join(LDAP_GROUP_TYPES)}.")
    user_filter = (environ.get("MSEPORTAL_LDAP_USER_FILTER") or "(uid=%(user)s)").strip()
    if "%(user)s" not in user_filter:
        raise ConfigError(f"MSEPORTAL_LDAP_USER_FILTER={user_filter!r} must hold %(user)s.")
    bind_dn = (environ.get("MSEPORTAL_LDAP_BIND_DN") or "").strip()
    bind_password = environ.get("MSEPORTAL_LDAP_BIND_PASSWORD") or ""
    if bind_password and not bind_dn:
        raise ConfigError("MSEPORTAL_LDAP_BIND_PASSWORD is set but MSEPORTAL_LDAP_BIND_DN is not.")
    ca_file = (environ.get("MSEPORTAL_LDAP_CA_FILE") or "").strip()
    return {
        "SERVER_URI": " ".join(servers),
        "START_TLS": start_tls,
        "BIND_DN": bind_dn,
        "BIND_PASSWORD": bind_password,
        "USER_SEARCH_BASE": user_search,
        "USER_FILTER": user_filter,
        "GROUP_SEARCH_BASE": group_search,
        "GROUP_TYPE": group_type,
        "CA_FILE": ca_file,
        "TIMEOUT": _seconds(environ, "MSEPORTAL_LDAP_TIMEOUT", 5),
        "ROLE_GROUPS": role_groups(environ, "MSEPORTAL_LDAP_ROLE_GROUPS"),
    }


def oidc_settings(environ: dict[str, str]) -> dict[str, object]:
    """The mozilla-django-oidc settings (``OIDC_...``), plus ``ROLE_GROUPS``,
    ``GROUPS_CLAIM``, ``USERNAME_CLAIM`` and ``PROVIDER_NAME``; {} when OIDC is off."""
    client_id = (environ.get("MSEPORTAL_OIDC_CLIENT_ID") or "").strip()
    if not client_id:
        return {}
    secret = environ.get("MSEPORTAL_OIDC_CLIENT_SECRET") or ""
    if not secret:
        raise ConfigError("MSEPORTAL_OIDC_CLIENT_ID is set but MSEPORTAL_OIDC_CLIENT_SECRET is not.")
    endpoints = {}
    for key, var in (
        ("OIDC_OP_AUTHORIZATION_ENDPOINT", "MSEPORTAL_OIDC_AUTHORIZATION_URL"),
        ("OIDC_OP_TOKEN_ENDPOINT", "MSEPORTAL_OIDC_TOKEN_URL"),
        ("OIDC_OP_USER_ENDPOINT", "MSEPORTAL_OIDC_USERINFO_URL"),
        ("OIDC_OP_JWKS_ENDPOINT", "MSEPORTAL_OIDC_JWKS_URL"),
    ):
        url = (environ.get(var) or "").strip()
        parts = urlsplit(url)
        if not url or parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ConfigError(f"{var} is not set to the provider's http(s) URL (its discovery document names it).")
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            raise ConfigError(f"{var}={url!r}: use https:// (only a loopback provider may be plain http).")
        endpoints[key] = url
    return {
        "OIDC_RP_CLIENT_ID": client_id,
        "OIDC_RP_CLIENT_SECRET": secret,
        **endpoints,
        "OIDC_RP_SIGN_ALGO": (environ.get("MSEPORTAL_OIDC_SIGN_ALGO") or "RS256").strip(),
        "OIDC_RP_SCOPES": (environ.get("MSEPORTAL_OIDC_SCOPES") or "openid email profile").strip(),
        "OIDC_USE_PKCE": True,
        "OIDC_TIMEOUT": _seconds(environ, "MSEPORTAL_OIDC_TIMEOUT", 5),
        "ROLE_GROUPS": role_groups(environ, "MSEPORTAL_OIDC_ROLE_GROUPS"),
        "GROUPS_CLAIM": (environ.get("MSEPORTAL_OIDC_GROUPS_CLAIM") or "groups").strip(),
        "USERNAME_CLAIM": (environ.get("MSEPORTAL_OIDC_USERNAME_CLAIM") or "preferred_username").strip(),
        "PROVIDER_NAME": (environ.get("MSEPORTAL_OIDC_PROVIDER_NAME") or "single sign-on").strip(),
    }


def _seconds(environ: dict[str, str], name: str, default: int) -> int:
    raw = (environ.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number of seconds.") from None
    if not 1 <= value <= 60:
        raise ConfigError(f"{name}={value}: between 1 and 60 seconds.")
    return value


def django_ldap_settings(cfg: dict[str, object]) -> dict[str, object]:
    """``AUTH_LDAP_*`` for django-auth-ldap from ``ldap_settings``' dict (python-ldap
    imported only here: the optional extra, ``pip install 'mseportal[ldap]'``)."""
    try:
        import ldap
        from django_auth_ldap.config import GroupOfNamesType, GroupOfUniqueNamesType, LDAPSearch, PosixGroupType
    except ImportError:
        raise ConfigError(
            "MSEPORTAL_LDAP_URI is set but django-auth-ldap is not installed: "
            "pip install 'mseportal[ldap]' (it builds python-ldap: apt-get install libldap2-dev libsasl2-dev)."
        ) from None
    group_type = {
        "groupOfNames": (GroupOfNamesType, "(objectClass=groupOfNames)"),
        "groupOfUniqueNames": (GroupOfUniqueNamesType, "(objectClass=groupOfUniqueNames)"),
        "posixGroup": (PosixGroupType, "(objectClass=posixGroup)"),
    }[str(cfg["GROUP_TYPE"])]
    timeout = cfg["TIMEOUT"]
    options: dict[object, object] = {ldap.OPT_NETWORK_TIMEOUT: timeout, ldap.OPT_TIMEOUT: timeout}
    options[ldap.OPT_REFERRALS] = 0
    if cfg["CA_FILE"]:
        options[ldap.OPT_X_TLS_CACERTFILE] = cfg["CA_FILE"]
        options[ldap.OPT_X_TLS_REQUIRE_CERT] = ldap.OPT_X_TLS_DEMAND
        options[ldap.OPT_X_TLS_NEWCTX] = 0  # last: makes the options above take effect
    return {
        "AUTH_LDAP_SERVER_URI": cfg["SERVER_URI"],
        "AUTH_LDAP_START_TLS": cfg["START_TLS"],
        "AUTH_LDAP_BIND_DN": cfg["BIND_DN"],
        "AUTH_LDAP_BIND_PASSWORD": cfg["BIND_PASSWORD"],
        "AUTH_LDAP_USER_SEARCH": LDAPSearch(str(cfg["USER_SEARCH_BASE"]), ldap.SCOPE_SUBTREE, str(cfg["USER_FILTER"])),
        "AUTH_LDAP_GROUP_SEARCH": LDAPSearch(str(cfg["GROUP_SEARCH_BASE"]), ldap.SCOPE_SUBTREE, group_type[1]),
        "AUTH_LDAP_GROUP_TYPE": group_type[0](),
        "AUTH_LDAP_USER_ATTR_MAP": {"first_name": "givenName", "last_name": "sn", "email": "mail"},
        "AUTH_LDAP_CONNECTION_OPTIONS": options,
        "AUTH_LDAP_CACHE_TIMEOUT": 0,  # roles are read again at every sign-in
    }
