"""dispatch: the one way anything reaches Celery — a task by name, after commit, robustly.

Celery runs eagerly where a task must run (the ``eager`` fixture): the task and the job
runner are the real ones; only the broker is made to fail, where a broker failure is what
is tested.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from celery.exceptions import NotRegistered
from django.db import transaction
from django.utils import timezone
from kombu.exceptions import OperationalError

from hapairs import dispatch, jobs
from hapairs.choices import JobStatus
from hapairs.models import Job

pytestmark = pytest.mark.django_db

KIND = "test_dispatch_kind"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def job():
    """A pending job of a test-only kind whose one step does nothing (no agent involved)."""
    saved = dict(jobs.REGISTRY)
    jobs.REGISTRY[KIND] = [jobs.Step("only", lambda ctx: None)]
    yield Job.objects.create(kind=KIND)
    jobs.REGISTRY.clear()
    jobs.REGISTRY.update(saved)


def status(job: Job) -> str:
    return Job.objects.get(pk=job.pk).status


def test_a_task_named_is_queued_only_once_the_transaction_commits(eager, job, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as queued:
        with transaction.atomic():
            dispatch.on_commit(dispatch.JOB_RUN, job.pk)
            assert status(job) == JobStatus.PENDING  # nothing runs inside the transaction
    assert len(queued) == 1
    assert status(job) == JobStatus.SUCCEEDED  # then the real task ran the real runner


def test_a_rolled_back_transaction_queues_nothing(eager, job, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as queued:
        with pytest.raises(RuntimeError), transaction.atomic():
            dispatch.on_commit(dispatch.JOB_RUN, job.pk)
            raise RuntimeError("the write was refused")
    assert queued == [] and status(job) == JobStatus.PENDING


def test_an_unknown_task_name_fails_in_the_caller_not_later_in_a_worker(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as queued, pytest.raises(NotRegistered):
        dispatch.on_commit("hapairs.tasks.no_such_task", 1)
    assert queued == []


def test_a_broker_down_at_commit_fails_no_request_and_the_job_waits_for_the_resume_task(
    job, django_capture_on_commit_callbacks, monkeypatch
):
    def broker_down(*args, **kwargs):
        raise OperationalError("[Errno 111] Connection refused")

    monkeypatch.setattr(dispatch.task(dispatch.JOB_RUN), "apply_async", broker_down)
    with django_capture_on_commit_callbacks(execute=True) as queued:
        dispatch.on_commit(dispatch.JOB_RUN, job.pk)  # logged, not raised: the rows are committed
    assert len(queued) == 1 and status(job) == JobStatus.PENDING
    Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    assert job.pk in jobs.resumable_jobs()  # beat's jobs_resume queues it again


def test_a_web_process_finds_a_task_by_name_before_anything_imported_the_tasks():
    # a fresh interpreter, as gunicorn starts one: nothing has imported hapairs.tasks yet
    code = (
        "import sys, django; django.setup(); before = 'hapairs.tasks' in sys.modules; "
        "from hapairs import dispatch; print(before, dispatch.task(dispatch.JOB_RUN).name)"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "mseportal.settings", "DEBUG": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["False", dispatch.JOB_RUN]
