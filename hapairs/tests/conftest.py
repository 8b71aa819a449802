"""Fixtures named after the models they make."""

from __future__ import annotations

import io
import itertools
import json
import os

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.servers.basehttp import ThreadedWSGIServer

from hapairs import services
from hapairs.roles import ADMIN, MONITOR, OPERATOR, sync_groups
from hapairs.tests.browser import browser  # noqa: F401  (Chromium, for the browser tests)
from hapairs.tests.e2e import Worker
from hapairs.tests.loopback import third_octet

_counter = itertools.count(1)

# The live server (a thread per request) listens with socketserver's backlog of 5: fifty
# operators connecting at once (test_concurrency) overflow it and are reset before they are
# heard. A production server listens with a deep one (gunicorn: 2048); so does this one.
ThreadedWSGIServer.request_queue_size = 128


@pytest.fixture
def make_appliance(db):
    """Make an appliance through the service; defaults give a valid unpaired node."""

    def make(**overrides):
        n = next(_counter)
        values = {
            "name": f"mse{n}",
            "device_type": "3355",
            "hm_ip": f"127.20.{n // 250}.{n % 250 + 2}",
            "version": "7.2.103.0",
            "password": "s3cret-pass",
            "role": "none",
        }
        values.update(overrides)
        return services.appliance_create(**values)

    return make


@pytest.fixture
def make_user(db, django_user_model):
    def make(role: str, username: str | None = None, password: str = "pw-for-tests-1"):
        if not Group.objects.filter(name=role).exists():
            # transactional tests flush the tables, groups from the data migration included
            from django.apps import apps

            sync_groups(apps)
        user = django_user_model.objects.create_user(
            username=username or role.lower(), password=password, is_staff=role == ADMIN, is_superuser=False
        )
        user.groups.add(Group.objects.get(name=role))
        return user

    return make


@pytest.fixture
def admin_user_(make_user):
    return make_user(ADMIN, "admin1")


@pytest.fixture
def operator_user(make_user):
    return make_user(OPERATOR, "operator1")


@pytest.fixture
def monitor_user(make_user):
    return make_user(MONITOR, "monitor1")


@pytest.fixture
def eager():
    """Tasks queued with .delay() run at once, in this process (retries too, without waiting)."""
    from mseportal.celery import app as celery_app

    saved = celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = True, False
    yield celery_app
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = saved


# --- end to end: real agents, a real worker, the API -----------------------------------
STABILISATION = 8  # seconds, instead of 30 minutes
# per process, so two suites running at once on one machine (a session and its CI) do not collide
_subnets = itertools.count(40 + os.getpid() % 150)


@pytest.fixture
def subnet():
    """A fresh 127.x.y.0/24 per test, so agents of a previous test never answer."""
    return f"127.61.{third_octet(_subnets)}"


@pytest.fixture
def worker(tmp_path, live_server):
    started = Worker(
        tmp_path,
        {
            "MSEPORTAL_INGEST_URL": f"{live_server.url}/api/v1/ingest/events",
            "MSEPORTAL_HA_STABILISATION_SECONDS": str(STABILISATION),
            "MSEPORTAL_JOB_LEASE_SECONDS": "3",
            "MSEPORTAL_RESUME_SECONDS": "1",
            "MSEPORTAL_POLL_SECONDS": "2",
            "MSEPORTAL_HA_SYNC_TIMEOUT_SECONDS": "90",
        },
    ).start()
    yield started
    started.stop_checked()


@pytest.fixture
def api(client, operator_user, admin_user_):
    def token(user):
        out = io.StringIO()
        call_command("api_token", user.username, stdout=out)
        return out.getvalue().strip().splitlines()[-1]

    tokens = {"operator": token(operator_user), "admin": token(admin_user_)}

    def call(method, path, body=None, as_="operator"):
        response = getattr(client, method)(
            f"/api/v1{path}",
            data=json.dumps(body) if body is not None else None,
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {tokens[as_]}",
        )
        return response

    return call
