"""The single sign-on settings (mseportal.ssoconf): what turns each on, and every setting
that would be unsafe or could not work refused at start, naming the variable."""

from __future__ import annotations

import pytest

from hapairs.tests.test_settings import run_manage
from mseportal.envconf import ConfigError
from mseportal.ssoconf import ldap_settings, oidc_settings, role_for, role_groups

LDAP = {
    "MSEPORTAL_LDAP_URI": "ldaps://ldap.example.net",
    "MSEPORTAL_LDAP_USER_SEARCH": "ou=people,dc=example,dc=net",
    "MSEPORTAL_LDAP_GROUP_SEARCH": "ou=groups,dc=example,dc=net",
    "MSEPORTAL_LDAP_ROLE_GROUPS": "Operator=cn=ops,ou=groups,dc=example,dc=net | cn=noc,ou=groups,dc=example,dc=net;"
    " Monitor=cn=view,ou=groups,dc=example,dc=net",
}
OIDC = {
    "MSEPORTAL_OIDC_CLIENT_ID": "portal",
    "MSEPORTAL_OIDC_CLIENT_SECRET": "s3cret",
    "MSEPORTAL_OIDC_AUTHORIZATION_URL": "https://idp.example.net/authorize",
    "MSEPORTAL_OIDC_TOKEN_URL": "https://idp.example.net/token",
    "MSEPORTAL_OIDC_USERINFO_URL": "https://idp.example.net/userinfo",
    "MSEPORTAL_OIDC_JWKS_URL": "https://idp.example.net/jwks",
    "MSEPORTAL_OIDC_ROLE_GROUPS": "Admin=noc-admins; Operator=noc",
}


def test_both_are_off_unless_turned_on():
    assert ldap_settings({}) == {} and oidc_settings({}) == {}


def test_role_groups_parse_dns_with_commas_and_several_groups_per_role():
    mapping = ldap_settings(LDAP)["ROLE_GROUPS"]
    assert mapping["Operator"] == ["cn=ops,ou=groups,dc=example,dc=net", "cn=noc,ou=groups,dc=example,dc=net"]
    assert role_for({"CN=NOC,OU=Groups,DC=example,DC=net"}, mapping, casefold=True) == "Operator"
    assert role_for({"cn=NOC,ou=groups,dc=example,dc=net"}, mapping) is None  # OIDC values: exact
    both = {"cn=view,ou=groups,dc=example,dc=net", "cn=ops,ou=groups,dc=example,dc=net"}
    assert role_for(both, mapping) == "Operator"  # the strongest
    assert role_for({"cn=other"}, mapping) is None


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"MSEPORTAL_LDAP_URI": "ldap://ldap.example.net"}, "cleartext"),
        ({"MSEPORTAL_LDAP_URI": "http://ldap.example.net"}, "not an ldap://"),
        ({"MSEPORTAL_LDAP_USER_SEARCH": ""}, "MSEPORTAL_LDAP_USER_SEARCH"),
        ({"MSEPORTAL_LDAP_GROUP_SEARCH": ""}, "MSEPORTAL_LDAP_GROUP_SEARCH"),
        ({"MSEPORTAL_LDAP_GROUP_TYPE": "activeDirectory"}, "MSEPORTAL_LDAP_GROUP_TYPE"),
        ({"MSEPORTAL_LDAP_USER_FILTER": "(uid=bob)"}, "%(user)s"),
        ({"MSEPORTAL_LDAP_BIND_PASSWORD": "x"}, "MSEPORTAL_LDAP_BIND_DN"),
        ({"MSEPORTAL_LDAP_ROLE_GROUPS": ""}, "MSEPORTAL_LDAP_ROLE_GROUPS is not set"),
        ({"MSEPORTAL_LDAP_ROLE_GROUPS": "Superuser=cn=x"}, "roles: Admin, Operator, Monitor"),
        ({"MSEPORTAL_LDAP_ROLE_GROUPS": "Admin=cn=a; Admin=cn=b"}, "given twice"),
        ({"MSEPORTAL_LDAP_ROLE_GROUPS": "Admin="}, "names no group"),
        ({"MSEPORTAL_LDAP_TIMEOUT": "0"}, "between 1 and 60"),
    ],
)
def test_bad_ldap_settings_are_refused_naming_what(changes, named):
    with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace(")", r"\)")):
        ldap_settings({**LDAP, **changes})


def test_plain_ldap_is_allowed_to_loopback_or_with_start_tls():
    assert ldap_settings({**LDAP, "MSEPORTAL_LDAP_URI": "ldap://127.0.0.1:3389"})["START_TLS"] is False
    cfg = ldap_settings({**LDAP, "MSEPORTAL_LDAP_URI": "ldap://ldap.example.net", "MSEPORTAL_LDAP_START_TLS": "1"})
    assert cfg["START_TLS"] is True


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"MSEPORTAL_OIDC_CLIENT_SECRET": ""}, "MSEPORTAL_OIDC_CLIENT_SECRET"),
        ({"MSEPORTAL_OIDC_TOKEN_URL": "http://idp.example.net/token"}, "use https://"),
        ({"MSEPORTAL_OIDC_JWKS_URL": ""}, "MSEPORTAL_OIDC_JWKS_URL is not set"),
        ({"MSEPORTAL_OIDC_USERINFO_URL": "ftp://idp/x"}, "MSEPORTAL_OIDC_USERINFO_URL"),
        ({"MSEPORTAL_OIDC_ROLE_GROUPS": "noc"}, "not ROLE=GROUP"),
    ],
)
def test_bad_oidc_settings_are_refused_naming_what(changes, named):
    with pytest.raises(ConfigError, match=named):
        oidc_settings({**OIDC, **changes})


def test_oidc_uses_pkce_and_its_defaults():
    cfg = oidc_settings(OIDC)
    assert cfg["OIDC_USE_PKCE"] is True and cfg["OIDC_RP_SIGN_ALGO"] == "RS256"
    assert (cfg["GROUPS_CLAIM"], cfg["USERNAME_CLAIM"]) == ("groups", "preferred_username")
    assert role_groups(OIDC, "MSEPORTAL_OIDC_ROLE_GROUPS") == {"Admin": ["noc-admins"], "Operator": ["noc"]}


def test_the_portal_refuses_to_start_with_cleartext_ldap_naming_the_variable():
    result = run_manage("check", env_overrides={"DEBUG": "1", **LDAP, "MSEPORTAL_LDAP_URI": "ldap://ldap.example.net"})
    assert result.returncode != 0
    assert "MSEPORTAL_LDAP_URI" in result.stderr and "cleartext" in result.stderr


def test_the_portal_starts_with_both_turned_on():
    result = run_manage("check", env_overrides={"DEBUG": "1", **LDAP, **OIDC})
    assert result.returncode == 0, result.stderr
