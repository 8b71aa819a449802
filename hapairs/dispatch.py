"""The one place that queues Celery tasks: by name, once the surrounding transaction commits.

Services, views and the API never import ``hapairs.tasks`` nor call ``.delay``: they hand
a task's name and its ids (never model instances) to ``on_commit``. So nothing below the
tasks imports them, and the layers keep one direction (tasks → services, never back).

The task is looked up by name in the Celery app's registry, not sent blind with
``send_task``: the registry's ``apply_async`` honours ``task_always_eager`` (the embedded
mode and the tests' ``eager`` fixture), and a name no module defines fails at the call
that queues it, not later in a worker. A web process has not imported the tasks modules
yet, so a name not found asks Celery's autodiscovery to import them first.
"""

from __future__ import annotations

import logging

from celery import current_app
from celery.app.task import Task
from django.db import transaction

log = logging.getLogger(__name__)

JOB_RUN = "hapairs.tasks.job_run"
DELIVERY_SEND = "hapairs.tasks.delivery_send"
ALERT_DISPATCH = "hapairs.tasks.alert_dispatch"
APPLIANCES_REFRESH = "hapairs.tasks.appliances_refresh"
POLL_SHARD = "hapairs.tasks.poll_shard"


def task(name: str) -> Task:
    """The registered task called ``name`` (``celery.exceptions.NotRegistered`` if none is)."""
    if name not in current_app.tasks:
        current_app.loader.import_default_modules()  # autodiscovery: imports every app's tasks.py
    return current_app.tasks[name]


def send(name: str, *args, queue: str | None = None, expires: float | None = None, priority: int | None = None) -> None:
    """Queue ``name(*args)`` now: for the tasks themselves (beat re-queues, the poll's fan-out),
    outside any transaction; ``queue`` (else the task's route), ``expires`` (seconds: a message
    not started by then is dropped, not run late) and ``priority`` (Redis: 0 first, 9 last)."""
    options = {"queue": queue, "expires": expires, "priority": priority}
    task(name).apply_async(args=args, **{key: value for key, value in options.items() if value is not None})


def on_commit(name: str, *args) -> None:
    """Queue ``name(*args)`` once the current transaction commits (at once outside one).

    Robust: a broker that is down when the transaction commits does not undo or fail the
    request that wrote the rows; the error is logged, and the rows wait for the beat tasks
    that re-queue what was lost (``jobs_resume``, ``deliveries_resume``)."""
    found = task(name)  # an unknown name fails here, in the caller, even though the send is robust

    def queue() -> None:
        try:
            found.apply_async(args=args)
        except Exception:  # the broker is down: the row waits for the re-queueing beat tasks
            log.warning("%s%r not queued: the broker is unavailable", name, args, exc_info=True)
            from hapairs import health  # (health imports the Celery app; dispatch is imported before it)

            health.broker_failed()

    transaction.on_commit(queue)
