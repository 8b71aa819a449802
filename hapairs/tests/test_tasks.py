"""The poll's fan-out and the refresh's route, read back from the real broker (Redis when
CELERY_BROKER_URL names it, else the filesystem broker): which queue each message went to,
its expiry and its priority."""

from __future__ import annotations

import time
from datetime import datetime

import pytest
from django.db import transaction

from hapairs import dispatch, sharding, tasks
from mseportal.celery import app

pytestmark = pytest.mark.django_db


@pytest.fixture
def broker(settings):
    """The configured broker's queues, emptied before and after; ``take(queue)`` returns the
    messages waiting in one."""
    names = ["celery", "refresh", *sharding.queues(settings.POLL_SHARDS)]
    with app.connection_for_read() as conn:
        channel = conn.default_channel

        def purge():
            for name in names:
                app.amqp.queues[name](channel).declare()
                channel.queue_purge(name)

        def take(name):
            bound = app.amqp.queues[name](channel)
            messages = []
            while (message := bound.get(no_ack=True)) is not None:
                messages.append(message)
            return messages

        purge()
        yield take
        purge()


def test_fleet_poll_sends_each_shard_to_its_own_queue_last_in_priority_and_expiring(broker, settings):
    # Given 5 shards, polled every 10 s
    settings.POLL_SHARDS, settings.POLL_SECONDS = 5, 10
    before = time.time()

    # When beat's task runs
    sent = tasks.fleet_poll()

    # Then each shard's queue holds one poll of that shard, of 5
    assert sent["queues"] == ["poll.0", "poll.1", "poll.2", "poll.3", "poll.4"]
    for shard in range(5):
        [message] = broker(f"poll.{shard}")
        args, kwargs, _ = message.decode()
        assert message.headers["task"] == dispatch.POLL_SHARD
        assert args == [shard, 5, sent["fired_at"]] and before <= sent["fired_at"] <= time.time() and kwargs == {}
        # dropped if no worker starts it within the interval, and taken after anything else
        expires = message.headers["expires"]
        assert expires is not None and 9 <= _seconds_from(before, expires) <= 11
        assert message.properties["priority"] == tasks.POLL_PRIORITY
    # and nothing else was queued
    assert broker("celery") == [] and broker("poll.5") == []


def test_a_refresh_after_a_push_goes_to_the_refresh_queue_at_the_first_priority(
    broker, django_capture_on_commit_callbacks
):
    # When a push (or a Refresh Status click) asks for two appliances to be refreshed
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        dispatch.on_commit(dispatch.APPLIANCES_REFRESH, [3, 4])

    # Then it waits on the refresh queue, not behind the polls nor the jobs
    [message] = broker("refresh")
    assert message.headers["task"] == dispatch.APPLIANCES_REFRESH and message.decode()[0] == [[3, 4]]
    assert message.properties.get("priority") in (None, 0)
    assert broker("celery") == []


def _seconds_from(start: float, iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp() - start
