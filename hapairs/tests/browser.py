"""Debian's Chromium driven by Playwright, for the browser tests (never a downloaded browser).

``browser`` is a fixture of every test (conftest); a browser test module imports the autouse
``orm_beside_playwright``: ``from hapairs.tests.browser import orm_beside_playwright``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright import sync_api as playwright_sync

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(autouse=True)
def orm_beside_playwright(monkeypatch):
    """Playwright's sync API keeps an event loop in the test's thread; the test's own ORM
    calls are still synchronous. Set per test, so it never leaks to other tests' subprocesses."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def log_in(page, base: str, username: str, password: str) -> None:
    """The login form, as an operator fills it; back on the Mobility Services Engines list."""
    page.goto(f"{base}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r".*/mse/$"))


@pytest.fixture
def browser():
    """Function-scoped: it must be gone before the database is flushed (teardown order)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (`make test` and .ci/run do it)")
    from django.db import connections

    with playwright_sync.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
        # ORM calls made while Playwright's loop runs get a connection of their own (Django
        # keys connections by async context): close it here, in that context, or it would
        # keep the test database from being dropped
        connections.close_all()
