"""The job runner: claims, leases, resumption, step failures — with real rows, no agents.

The steps here are plain functions registered for a test-only kind, so what is tested
is the runner itself (the agent-facing steps are covered end to end).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from hapairs import agent_client, jobs, services
from hapairs.choices import JobKind, JobStatus
from hapairs.models import HAEvent, Job

pytestmark = pytest.mark.django_db

KIND = "test_kind"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def calls():
    return []


@pytest.fixture
def register_steps(calls, settings):
    settings.JOB_STEP_RETRIES = 3
    saved = dict(jobs.REGISTRY)

    def register(*behaviours):
        steps = []
        for index, behaviour in enumerate(behaviours):

            def run(ctx, behaviour=behaviour, index=index):
                calls.append((ctx.step.name, ctx.idempotency_key))
                behaviour(ctx)

            steps.append(jobs.Step(f"step{index}", run))
        jobs.REGISTRY[KIND] = steps

    yield register
    jobs.REGISTRY.clear()
    jobs.REGISTRY.update(saved)


def ok(ctx):
    return None


def make_job(**fields):
    return Job.objects.create(kind=KIND, **fields)


def test_a_job_runs_every_step_once_and_succeeds(register_steps, calls):
    register_steps(ok, ok, ok)
    job = make_job()
    assert jobs.run(job.pk, worker="w1") == JobStatus.SUCCEEDED
    job.refresh_from_db()
    assert job.status == "succeeded" and job.progress == 100 and job.steps_done == ["step0", "step1", "step2"]
    assert [name for name, _ in calls] == ["step0", "step1", "step2"]
    assert calls[0][1] == f"mseportal-job-{job.pk}:step0"
    assert job.started_at and job.finished_at and job.lease_until is None


def test_a_second_worker_cannot_claim_a_running_job_with_a_live_lease(register_steps):
    register_steps(ok)
    job = make_job()
    assert jobs.claim(job.pk, "w1") is not None
    assert jobs.claim(job.pk, "w2") is None
    assert jobs.run(job.pk, worker="w2") is None
    assert Job.objects.get(pk=job.pk).worker == "w1"


def test_a_dead_workers_job_resumes_after_the_lease_and_skips_done_steps(register_steps, calls):
    register_steps(ok, ok, ok)
    job = make_job(
        status=JobStatus.RUNNING,
        worker="dead",
        steps_done=["step0"],
        lease_until=timezone.now() - timedelta(seconds=1),
        attempts=1,
    )
    assert job.pk in jobs.resumable_jobs()
    assert jobs.run(job.pk, worker="w2") == JobStatus.SUCCEEDED
    assert [name for name, _ in calls] == ["step1", "step2"]
    assert Job.objects.get(pk=job.pk).attempts == 2


def test_a_lost_queue_message_is_found_by_resume(register_steps):
    job = make_job()
    Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    assert job.pk in jobs.resumable_jobs()
    assert make_job().pk not in jobs.resumable_jobs()  # a fresh one is left to its message


def test_an_agent_refusal_fails_the_job_with_its_message_and_records_it(register_steps, calls):
    def refuse(ctx):
        raise agent_client.AgentRejected("mse2: Failback is not allowed until 06:07:20")

    register_steps(ok, refuse, ok)
    job = make_job()
    assert jobs.run(job.pk, worker="w1") == JobStatus.FAILED
    job.refresh_from_db()
    assert job.error == "mse2: Failback is not allowed until 06:07:20"
    assert job.steps_done == ["step0"]
    assert [name for name, _ in calls] == ["step0", "step1"]
    assert HAEvent.objects.filter(job=job, description__endswith="failed").exists()


def test_an_unreachable_agent_is_retried_with_the_same_key_then_succeeds(register_steps, calls):
    attempts = []

    def flaky(ctx):
        attempts.append(1)
        if len(attempts) < 3:
            raise agent_client.AgentUnavailable("mse1 did not answer")

    register_steps(flaky)
    job = make_job()
    assert jobs.run(job.pk, worker="w1") == JobStatus.SUCCEEDED
    assert len({key for _, key in calls}) == 1 and len(calls) == 3


def test_an_agent_that_stays_down_fails_the_job_saying_so(register_steps):
    def down(ctx):
        raise agent_client.AgentUnavailable("mse1 did not answer within 5 s.")

    register_steps(down)
    job = make_job()
    assert jobs.run(job.pk, worker="w1") == JobStatus.FAILED
    assert "gave up after 3 attempts" in Job.objects.get(pk=job.pk).error


def test_a_bug_in_a_step_still_ends_the_job_with_a_clear_record(register_steps):
    def bug(ctx):
        raise ZeroDivisionError

    register_steps(bug)
    job = make_job()
    assert jobs.run(job.pk, worker="w1") == JobStatus.FAILED
    assert "Internal error" in Job.objects.get(pk=job.pk).error


def test_a_worker_that_lost_its_lease_stops_without_writing(register_steps):
    def stolen(ctx):
        Job.objects.filter(pk=ctx.job.pk).update(worker="someone-else")

    register_steps(stolen, ok)
    job = make_job()
    assert jobs.run(job.pk, worker="w1") is None
    job.refresh_from_db()
    assert job.status == "running" and job.steps_done == []


def test_progress_inside_a_step_is_recorded(register_steps):
    seen = []

    def long(ctx):
        ctx.progress(50)
        seen.append(Job.objects.get(pk=ctx.job.pk).progress)

    register_steps(ok, long)
    job = make_job()
    jobs.run(job.pk, worker="w1")
    assert seen == [75]


def test_job_enqueue_queues_only_after_commit(django_capture_on_commit_callbacks, make_appliance):
    primary = make_appliance(name="p", hm_ip="127.10.10.15", vip="127.10.10.14", vip_prefixlen=24)
    secondary = make_appliance(name="s", hm_ip="127.10.10.16")
    pair = services.ha_pair_create(primary=primary, secondary=secondary)
    with django_capture_on_commit_callbacks() as callbacks:
        job = services.job_enqueue(kind="update_ha", pair=pair, reason="test")
    assert len(callbacks) == 1
    assert Job.objects.get(pk=job.pk).status == "pending"
    with pytest.raises(services.JobConflict, match="already pending"):
        services.job_enqueue(kind="switchover", pair=pair)


# --- the steps are registered at start-up, in every process ---------------------------------------


def test_every_job_kind_has_its_steps_after_django_setup_without_importing_jobsteps():
    # a fresh interpreter (a web process, a worker, a shell): only django.setup(), then the runner
    code = (
        "import json, django; django.setup(); from hapairs import jobs; "
        "print(json.dumps({kind: [step.name for step in steps] for kind, steps in jobs.REGISTRY.items()}))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "mseportal.settings", "DEBUG": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    registry = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(registry) == set(JobKind.values)  # every kind a service can enqueue has steps
    assert all(registry.values())  # each with at least one step
    assert registry[JobKind.SWITCHOVER] == ["check_generation", "switchover_invoke", "wait_failover_active"]


# --- cancelling a running job -----------------------------------------------------------------
def test_a_cancel_asked_during_a_step_stops_the_job_before_the_next_and_says_what_ran(register_steps, calls):
    def ask_to_cancel(ctx):
        assert services.job_cancel(job=ctx.job) == "requested"  # running: asked, not yet stopped

    register_steps(ask_to_cancel, ok, ok)
    job = make_job()
    assert jobs.run(job.pk, worker="w1") == JobStatus.CANCELLED
    job.refresh_from_db()
    assert [name for name, _ in calls] == ["step0"]  # step0 ran to its end; step1 never started
    assert job.status == "cancelled" and job.steps_done == ["step0"] and job.finished_at is not None
    assert "Done: step0." in job.error and "Not done: step1; step2." in job.error
    event = HAEvent.objects.get(job=job, code="job_cancelled")
    assert event.generated_by == "mseportal" and "Not done: step1; step2." in event.remarks
    assert services.job_cancel(job=job) is None  # ended: nothing more to cancel


def test_a_pending_job_is_withdrawn_and_runs_nothing(register_steps, calls):
    register_steps(ok)
    job = make_job()
    assert services.job_cancel(job=job) == "cancelled"
    assert jobs.run(job.pk, worker="w1") is None and calls == []
    assert Job.objects.get(pk=job.pk).status == "cancelled"


@pytest.mark.django_db(transaction=True)
def test_a_job_cancelled_mid_wait_ends_cancelled_within_a_second(register_steps, calls, operator_user):
    """The worker in a thread of its own, waiting in step1 for something that never comes
    (30 s); the cancel, from this thread, ends it within a second."""
    import threading
    import time

    from django.db import connection

    waiting = threading.Event()

    def wait_forever(ctx):
        waiting.set()
        ctx.wait_until(lambda: False, timeout=30, every=2.0, what="something that never comes")

    register_steps(ok, wait_forever, ok)
    job = make_job()
    outcome = []

    def work():
        try:
            outcome.append(jobs.run(job.pk, worker="w1"))
        finally:
            connection.close()

    worker = threading.Thread(target=work)
    worker.start()
    assert waiting.wait(10), "the job reached its wait"
    time.sleep(0.3)
    asked = time.monotonic()
    assert services.job_cancel(job=Job.objects.get(pk=job.pk), by=operator_user) == "requested"
    worker.join(5)
    took = time.monotonic() - asked
    assert outcome == [JobStatus.CANCELLED] and took <= 1.0, (outcome, took)
    job.refresh_from_db()
    assert job.status == "cancelled" and job.steps_done == ["step0"]
    assert job.error.startswith(f"Cancelled by {operator_user.get_username()} during “step1”.")
    assert "Done: step0. Not done: step1; step2." in job.error


def test_the_api_cancels_a_pending_job_asks_a_running_one_and_refuses_an_ended_one(api, operator_user):
    pending = make_job()
    response = api("post", f"/jobs/{pending.pk}/cancel")
    assert response.status_code == 200, response.content
    assert response.json()["outcome"] == "cancelled" and response.json()["job"]["status"] == "cancelled"
    response = api("post", f"/jobs/{pending.pk}/cancel")
    assert response.status_code == 409 and "already ended (cancelled)" in response.json()["detail"]
    running = make_job(status=JobStatus.RUNNING, worker="w1")
    response = api("post", f"/jobs/{running.pk}/cancel")
    assert response.status_code == 200 and response.json()["outcome"] == "requested"
    assert Job.objects.get(pk=running.pk).cancel_requested_by == operator_user.get_username()
    assert api("post", "/jobs/999999/cancel").status_code == 404
