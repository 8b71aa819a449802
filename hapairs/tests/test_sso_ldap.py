"""LDAP sign-in against a real slapd on loopback (hapairs.tests.ldapserver): the login form,
the directory's groups as roles, the break-glass local accounts, a directory that is down."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from hapairs.models import Job
from hapairs.roles import role_of
from hapairs.sso import DIRECTORY_DOWN, LOCAL_ACCOUNT, NO_GROUP
from hapairs.tests.ldapserver import ROOT_DN, ROOT_PW, USERS, Directory, group_dn, require_or_skip, user_dn
from hapairs.tests.test_pages import healthy, pair  # noqa: F401 - the fixture
from mseportal.ssoconf import django_ldap_settings, ldap_settings

pytestmark = pytest.mark.django_db


@pytest.fixture
def directory(tmp_path, settings):
    """slapd running, and the portal's settings read from the environment it would give."""
    require_or_skip(pytest)
    started = Directory(tmp_path).start()
    cfg = ldap_settings(started.env())
    settings.MSEPORTAL_LDAP = cfg
    for name, value in django_ldap_settings(cfg).items():
        setattr(settings, name, value)
    settings.AUTHENTICATION_BACKENDS = ["hapairs.sso.DirectoryBackend", "django.contrib.auth.backends.ModelBackend"]
    yield started
    started.stop()


def log_in(client, username, password):
    return client.post("/login/", {"username": username, "password": password}, follow=True)


def signed_in(client):
    return client.get("/mse/").status_code == 200


def test_an_operator_group_member_logs_in_through_the_form_as_operator(client, directory, pair):  # noqa: F811
    healthy(pair)
    page = log_in(client, "olga", USERS["olga"][0])
    assert page.redirect_chain and signed_in(client)
    user = get_user_model().objects.get(username="olga")
    assert role_of(user) == "Operator"
    # made from the directory: its e-mail and name, and no password of its own to guess
    assert (user.email, user.first_name) == ("olga@mse.test", "Olga") and not user.has_usable_password()
    assert "Confirm switchover" in client.get("/mse/p1/ha/switchover/").content.decode()
    response = client.post("/mse/p1/ha/switchover/", {"reason": "patching p1 (LDAP operator)"})
    assert response.status_code == 302
    assert Job.objects.get().requested_by == user


def test_a_monitor_group_member_is_refused_a_switchover(client, directory, pair):  # noqa: F811
    healthy(pair)
    log_in(client, "moritz", USERS["moritz"][0])
    assert signed_in(client)
    assert role_of(get_user_model().objects.get(username="moritz")) == "Monitor"
    response = client.post("/mse/p1/ha/switchover/", {"reason": "x"})
    assert response.status_code == 403 and b"Your role (Monitor) may not" in response.content
    assert not Job.objects.exists()


def test_a_directory_user_in_no_role_group_is_refused_saying_so(client, directory):
    page = log_in(client, "nora", USERS["nora"][0]).content.decode()
    assert not signed_in(client)
    assert NO_GROUP.replace("'", "&#x27;") in page


def test_a_wrong_password_is_refused_like_any_other(client, directory):
    page = log_in(client, "olga", "not-her-password").content.decode()
    assert not signed_in(client) and "didn't match" in page
    assert not get_user_model().objects.filter(username="olga").exists()


def test_a_local_account_of_the_same_name_is_never_taken_over(client, directory, make_user):
    """Break-glass: a local account keeps its own password, and its role, whatever the
    directory holds under its name."""
    local = make_user("Admin", "olga", password="local-break-glass-1")
    page = log_in(client, "olga", USERS["olga"][0]).content.decode()
    assert not signed_in(client) and LOCAL_ACCOUNT in page
    log_in(client, "olga", "local-break-glass-1")
    assert signed_in(client)
    local.refresh_from_db()
    assert role_of(local) == "Admin" and local.check_password("local-break-glass-1")


def test_a_group_change_in_the_directory_changes_the_role_at_the_next_login(client, directory):
    import ldap

    log_in(client, "olga", USERS["olga"][0])
    assert role_of(get_user_model().objects.get(username="olga")) == "Operator"
    client.logout()
    conn = ldap.initialize(directory.uri)
    conn.simple_bind_s(ROOT_DN, ROOT_PW)
    conn.modify_s(group_dn("mse-monitors"), [(ldap.MOD_ADD, "member", [user_dn("olga").encode()])])
    # (a groupOfNames keeps a member: the root DN takes olga's place)
    conn.modify_s(group_dn("mse-operators"), [(ldap.MOD_REPLACE, "member", [ROOT_DN.encode()])])
    conn.unbind_s()
    log_in(client, "olga", USERS["olga"][0])
    assert signed_in(client)
    user = get_user_model().objects.get(username="olga")
    assert role_of(user) == "Monitor" and list(user.groups.values_list("name", flat=True)) == ["Monitor"]
    # and out of every role group: refused, and the role the last sign-in gave is gone
    client.logout()
    conn = ldap.initialize(directory.uri)
    conn.simple_bind_s(ROOT_DN, ROOT_PW)
    conn.modify_s(group_dn("mse-monitors"), [(ldap.MOD_REPLACE, "member", [ROOT_DN.encode()])])
    conn.unbind_s()
    assert NO_GROUP.replace("'", "&#x27;") in log_in(client, "olga", USERS["olga"][0]).content.decode()
    assert not signed_in(client) and role_of(get_user_model().objects.get(username="olga")) is None


def test_a_directory_that_is_down_says_so_and_local_accounts_still_log_in(client, directory, make_user):
    make_user("Admin", "breakglass", password="local-break-glass-1")
    directory.stop()
    page = log_in(client, "olga", USERS["olga"][0]).content.decode()
    assert not signed_in(client) and DIRECTORY_DOWN in page
    log_in(client, "breakglass", "local-break-glass-1")
    assert signed_in(client)
