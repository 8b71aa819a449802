"""The production profile under gunicorn, as the TLS proxy sees it (issue 12, item 2).

A fresh SQLite database and static folder in tmp, the portal's env as
deploy/portal.env.example shapes it (DEBUG=0, SECURE_PROXY_SSL_HEADER=1, …), gunicorn
started with deploy/gunicorn.conf.py on a free loopback address. The requests are plain
HTTP carrying the header nginx sets (X-Forwarded-Proto: https), as nginx's are; cookies
are kept by hand, since they are Secure and urllib would not send them over http://.
"""

from __future__ import annotations

import http.client
import random
import re
import socket
import subprocess
import sys
import time
from html.parser import HTMLParser
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
USERNAME, PASSWORD = "prodadmin", "a-long-production-test-password-7"
# the pages of the menu and their forms (hapairs/urls.py); detail pages need appliances
PAGES = (
    "/mse/",
    "/mse/add/",
    "/ha/",
    "/jobs/",
    "/licenses/",
    "/licenses/upload/",
    "/reports/",
    "/reports/new/",
    "/reports/preview/",
    "/reports/mailbox/",
    "/admin/",
)


def free_loopback() -> tuple[str, int]:
    """A random 127.x.y.z address and a port free on it."""
    host = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
    with socket.socket() as s:
        s.bind((host, 0))
        return host, s.getsockname()[1]


class Assets(HTMLParser):
    """The /static/ URLs of a page's <link href> and <script src>."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        url = dict(attrs).get({"link": "href", "script": "src"}.get(tag, ""))
        if url and url.startswith("/static/"):
            self.urls.append(url)


class Proxied:
    """An HTTP client that talks to gunicorn as nginx does: Host, X-Forwarded-Proto/For."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.origin = f"https://{host}:{port}"
        self.cookies: dict[str, str] = {}
        self.set_cookies: dict[str, str] = {}  # name -> the raw Set-Cookie line

    def request(self, method: str, path: str, body: dict | None = None, *, proxied: bool = True, headers=None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        sent = {"Host": f"{self.host}:{self.port}", **(headers or {})}
        if proxied:
            sent.update({"X-Forwarded-Proto": "https", "X-Forwarded-For": "192.0.2.10"})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        data = None
        if body is not None:
            data = urlencode(body)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=data, headers=sent)
            resp = conn.getresponse()
            content = resp.read()
        finally:
            conn.close()
        for line in resp.headers.get_all("Set-Cookie") or []:
            cookie = SimpleCookie(line)
            for name, morsel in cookie.items():
                self.cookies[name] = morsel.value
                self.set_cookies[name] = line
        return resp, content

    def get(self, path: str, **kw):
        return self.request("GET", path, **kw)


def manage(env: dict[str, str], *args: str) -> str:
    r = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=240
    )
    assert r.returncode == 0, f"manage.py {' '.join(args)}: {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


def production_env(tmp: Path, host: str, port: int, name: str, **extra: str) -> dict[str, str]:
    """The production profile: nothing inherited from the test run but PATH."""
    return {
        "PATH": f"{VENV_BIN}:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(tmp),
        "DJANGO_SETTINGS_MODULE": "mseportal.settings",
        "DEBUG": "0",
        "SECRET_KEY": f"{name}-test-" + "s3cr3t-" * 8,
        "ALLOWED_HOSTS": host,
        "CSRF_TRUSTED_ORIGINS": f"https://{host}:{port}",
        "SECURE_PROXY_SSL_HEADER": "1",
        "MSEPORTAL_VAR_DIR": str(tmp / "var"),
        "MSEPORTAL_STATIC_ROOT": str(tmp / "static"),
        "MSEPORTAL_WEB_BIND": f"{host}:{port}",
        **extra,
    }


def set_up(env: dict[str, str], username: str, password: str) -> None:
    """What the operator does when setting it up: migrate, a user, the static files."""
    manage(env, "migrate", "--no-input")
    manage(env, "createsuperuser", "--no-input", "--username", username, "--email", "noc@example.net")
    manage(
        env, "shell", "-c",
        "from django.contrib.auth import get_user_model; "
        f"u = get_user_model().objects.get(username={username!r}); u.set_password({password!r}); u.save()",
    )  # fmt: skip
    manage(env, "collectstatic", "--no-input", "--verbosity", "0")


class Web:
    """gunicorn under the production profile, as mseportal-web.service runs it. Its access
    log goes where the deployed configuration sends it (stdout: ``log``), or, with
    ``access_file``, to a file of its own (``access``: which request got which status)."""

    def __init__(self, tmp: Path, env: dict[str, str], *, access_file: bool = False) -> None:
        self.env, self.proc = env, None
        self.log = tmp / "gunicorn.log"
        self.access = tmp / "access.log" if access_file else self.log

    def start(self, client: Proxied) -> None:
        extra = ["--access-logfile", str(self.access)] if self.access != self.log else []
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                [str(VENV_BIN / "gunicorn"), "--config", str(REPO / "deploy" / "gunicorn.conf.py"), *extra],
                cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if client.get("/healthz", proxied=False)[0].status == 200:
                    return
            except OSError:
                pass
            assert time.monotonic() < deadline, "gunicorn did not answer /healthz in 60 s"
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()  # as systemd stops it: SIGTERM, the requests in flight finish
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self, client: Proxied) -> None:
        self.stop()
        self.start(client)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("production")
    host, port = free_loopback()
    env = production_env(tmp, host, port, "production", MSEPORTAL_WEB_WORKERS="2")
    set_up(env, USERNAME, PASSWORD)
    web = Web(tmp, env)
    client = Proxied(host, port)
    try:
        web.start(client)
        yield {"env": env, "client": client, "tmp": tmp, "log": web.log}
    finally:
        web.stop()


def test_check_deploy_is_clean_for_the_production_profile(served):
    out = manage(served["env"], "check", "--deploy", "--fail-level", "WARNING")
    assert "System check identified no issues (0 silenced)." in out, out
    assert "WARNING" not in out and "?: (" not in out, out


def test_plain_http_without_the_proxy_header_is_sent_to_https_but_the_health_probe_answers(served):
    client = Proxied(served["client"].host, served["client"].port)
    resp, _ = client.get("/login/", proxied=False)
    assert resp.status == 301 and resp.headers["Location"] == f"{client.origin}/login/"
    resp, body = client.get("/healthz", proxied=False)
    assert resp.status == 200, body


def test_log_in_through_the_proxy_then_every_page_and_its_static_files_answer(served):
    client: Proxied = served["client"]
    # given the login form, over "https" (the proxy's header)
    resp, body = client.get("/login/")
    assert resp.status == 200, body[:500]
    assert "max-age=31536000" in resp.headers["Strict-Transport-Security"]
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body)
    assert token and "csrftoken" in client.cookies
    assert "Secure" in client.set_cookies["csrftoken"]
    login_assets = Assets()
    login_assets.feed(body.decode())
    # when the user logs in, as a browser would (Origin and Referer of the https site)
    resp, body = client.request(
        "POST",
        "/login/",
        {"username": USERNAME, "password": PASSWORD, "csrfmiddlewaretoken": token.group(1).decode()},
        headers={"Origin": client.origin, "Referer": f"{client.origin}/login/"},
    )
    # then the portal takes them home with a secure, HTTP-only session cookie
    assert resp.status == 302, body[:2000]
    assert urlsplit(resp.headers["Location"]).path == "/"
    session = client.set_cookies["sessionid"]
    assert "Secure" in session and "HttpOnly" in session
    resp, body = client.get("/")
    assert resp.status in (200, 302), body[:500]
    # and every page answers, and so does each static file it names
    assets: dict[str, str] = {url: "/login/" for url in login_assets.urls}
    for page in PAGES:
        resp, body = client.get(page)
        assert resp.status == 200, f"{page}: {resp.status}\n{body[:2000]!r}\n{served['log'].read_text()[-3000:]}"
        found = Assets()
        found.feed(body.decode())
        assert found.urls, f"{page} names no static file"
        for url in found.urls:
            assets.setdefault(url, page)
    for url, page in sorted(assets.items()):
        resp, body = client.get(url)
        assert resp.status == 200 and body, f"{url} (from {page}): {resp.status}"
    # the manifest storage names them by content (so WhiteNoise lets them be cached for ever)
    hashed = [url for url in assets if re.search(r"\.[0-9a-f]{12}\.(css|js)$", url)]
    assert hashed, sorted(assets)
    resp, _ = client.get(hashed[0])
    assert "immutable" in resp.headers.get("Cache-Control", ""), resp.headers
    # and gunicorn's access log (stdout) shows the client the proxy named
    assert "192.0.2.10" in served["log"].read_text()
