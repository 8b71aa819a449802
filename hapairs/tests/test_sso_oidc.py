"""OIDC sign-in against a real provider (django-oauth-toolkit with OIDC on, in its own
process on loopback: hapairs.tests.oidcprovider). The portal's side is the real flow: its
redirect to the provider, the code back, the token, JWKS and userinfo requests it makes to
the provider itself, and the group claim mapped to a role."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from urllib.parse import urljoin, urlsplit

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.contrib.auth import get_user_model

from hapairs.models import Job
from hapairs.roles import role_of
from hapairs.sso import LOCAL_ACCOUNT, NO_GROUP
from hapairs.tests.oidcprovider.serve import USERS
from hapairs.tests.ports import free_port
from hapairs.tests.test_pages import healthy, pair  # noqa: F401 - the fixture
from mseportal.ssoconf import oidc_settings

pytestmark = pytest.mark.django_db
CLIENT_ID, CLIENT_SECRET = "mseportal-test-client", "client-secret-for-tests-0123456789"
CALLBACK = "http://testserver/oidc/callback/"  # the test client's host


@pytest.fixture(scope="module")
def provider_process(tmp_path_factory):
    """One provider for the module (its start, with its migrations, takes seconds)."""
    tmp_path = tmp_path_factory.mktemp("oidc")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "signing-key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    port = free_port()
    log = open(tmp_path / "provider.log", "w")  # noqa: SIM115
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hapairs.tests.oidcprovider.serve",
            str(tmp_path),
            str(port),
            CALLBACK,
            CLIENT_ID,
            CLIENT_SECRET,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"{base}/o/.well-known/openid-configuration", timeout=2).ok:
                break
        except requests.ConnectionError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the test OIDC provider did not start: {(tmp_path / 'provider.log').read_text()[-3000:]}")
        time.sleep(0.2)
    yield requests.get(f"{base}/o/.well-known/openid-configuration", timeout=5).json()
    process.terminate()
    process.wait(10)
    log.close()


@pytest.fixture
def provider(provider_process, settings):
    """The portal set as the environment would set it for that provider."""
    discovery = provider_process
    cfg = oidc_settings(
        {
            "MSEPORTAL_OIDC_CLIENT_ID": CLIENT_ID,
            "MSEPORTAL_OIDC_CLIENT_SECRET": CLIENT_SECRET,
            "MSEPORTAL_OIDC_AUTHORIZATION_URL": discovery["authorization_endpoint"],
            "MSEPORTAL_OIDC_TOKEN_URL": discovery["token_endpoint"],
            "MSEPORTAL_OIDC_USERINFO_URL": discovery["userinfo_endpoint"],
            "MSEPORTAL_OIDC_JWKS_URL": discovery["jwks_uri"],
            "MSEPORTAL_OIDC_ROLE_GROUPS": "Admin=mse-admins; Operator=mse-operators; Monitor=mse-monitors",
            "MSEPORTAL_OIDC_PROVIDER_NAME": "Test IdP",
        }
    )
    settings.MSEPORTAL_OIDC = cfg
    for name, value in cfg.items():
        if name.startswith("OIDC_"):
            setattr(settings, name, value)
    settings.AUTHENTICATION_BACKENDS = [
        "hapairs.sso.IdentityProviderBackend",
        "django.contrib.auth.backends.ModelBackend",
    ]
    return discovery


def sso_login(client, username, password):
    """The browser's part, step by step: the portal's button, the provider's login form,
    the provider's redirect back with a code, the portal's callback. Returns the page the
    portal lands on."""
    login_page = client.get("/login/").content.decode()
    assert "Log in with Test IdP" in login_page
    start = client.get("/oidc/authenticate/")
    assert start.status_code == 302
    idp = requests.Session()
    url = start["Location"]
    assert url.startswith("http://127.0.0.1:") and "code_challenge=" in url  # PKCE
    for _ in range(10):
        response = idp.get(url, allow_redirects=False, timeout=10)
        if response.status_code == 200 and "csrfmiddlewaretoken" in response.text:  # the IdP's login form
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', response.text).group(1)
            nxt = re.search(r'name="next" value="([^"]*)"', response.text).group(1).replace("&amp;", "&")
            response = idp.post(
                url,
                {"csrfmiddlewaretoken": token, "username": username, "password": password, "next": nxt},
                headers={"Referer": url},
                allow_redirects=False,
                timeout=10,
            )
        assert response.status_code == 302, response.text[:500]
        url = urljoin(url, response.headers["Location"])
        if url.startswith(CALLBACK):
            break
    else:
        pytest.fail("the provider never sent the browser back to the portal")
    parts = urlsplit(url)
    return client.get(f"{parts.path}?{parts.query}", follow=True)


def signed_in(client):
    return client.get("/mse/").status_code == 200


def test_an_idp_operator_logs_in_and_may_switch_over(client, provider, pair):  # noqa: F811
    healthy(pair)
    sso_login(client, "ophelia", USERS["ophelia"][0])
    assert signed_in(client)
    user = get_user_model().objects.get(username="ophelia")
    assert role_of(user) == "Operator" and user.email == "ophelia@idp.test" and not user.has_usable_password()
    response = client.post("/mse/p1/ha/switchover/", {"reason": "patching p1 (SSO operator)"})
    assert response.status_code == 302 and Job.objects.get().requested_by == user


def test_an_idp_monitor_is_refused_a_switchover(client, provider, pair):  # noqa: F811
    healthy(pair)
    sso_login(client, "mona", USERS["mona"][0])
    assert signed_in(client) and role_of(get_user_model().objects.get(username="mona")) == "Monitor"
    response = client.post("/mse/p1/ha/switchover/", {"reason": "x"})
    assert response.status_code == 403 and b"Your role (Monitor) may not" in response.content
    assert not Job.objects.exists()


def test_an_idp_user_in_no_role_group_is_refused_saying_so(client, provider):
    page = sso_login(client, "nobody", USERS["nobody"][0]).content.decode()
    assert not signed_in(client) and NO_GROUP.replace("'", "&#x27;") in page
    assert not get_user_model().objects.filter(username="nobody").exists()


def test_an_idp_user_never_takes_over_a_local_account(client, provider, make_user):
    local = make_user("Admin", "ophelia", password="local-break-glass-1")
    page = sso_login(client, "ophelia", USERS["ophelia"][0]).content.decode()
    assert not signed_in(client) and LOCAL_ACCOUNT in page
    local.refresh_from_db()
    assert role_of(local) == "Admin" and local.check_password("local-break-glass-1")
