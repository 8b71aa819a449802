"""Fixtures named after the models they make."""

from __future__ import annotations

import itertools

import pytest
from django.contrib.auth.models import Group

from hapairs import services
from hapairs.roles import ADMIN, MONITOR, OPERATOR, sync_groups

_counter = itertools.count(1)


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
