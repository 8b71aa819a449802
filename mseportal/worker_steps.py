"""Celery worker bootsteps of the portal.

``PollShardOwner``: a worker consumes only the poll queues of the shards it owns
(``hapairs.sharding.assignment`` over the live pollers), so a shard sticks to one worker and
its agent connections stay open; see ``hapairs.sharding`` (Owners). It uses Celery's own
``Consumer.add_task_queue`` / ``cancel_task_queue``, the calls behind ``celery control
add_consumer``, on a timer of the worker's consumer.

A worker started with ``-Q`` naming none of the poll queues is not a poller: the step leaves
it alone. Modules of the portal are imported when the step starts (Django is set up by then),
not when this one is imported (by ``mseportal.celery``, before Django is).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

log = logging.getLogger("hapairs.sharding")


class PollShardOwner(bootsteps.StartStopStep):
    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.worker = ""
        self.managed: list[str] | None = None  # the poll queues it was started on (-Q, or all)
        self.owned: list[int] | None = None
        self.timer: Any = None

    def start(self, c: Any) -> None:
        from django.conf import settings

        from hapairs import sharding

        if self.managed is None:  # the first start: a restart after a lost broker connection
            # consumes only the queues still selected, not those it was started on
            consuming = {queue.name for queue in c.task_consumer.queues}
            self.managed = [queue for queue in sharding.queues(settings.POLL_SHARDS) if queue in consuming]
        if not self.managed or not sharding.owners_supported():
            return  # not a poller, or one host (the filesystem broker): every queue, as configured
        self.worker = c.hostname
        self.rebalance(c)
        self.timer = c.timer.call_repeatedly(sharding.OWNERS_REFRESH, self.rebalance, (c,))

    def rebalance(self, c: Any) -> None:
        """Refresh this worker's entry; consume the queues of the shards it owns now."""
        import redis
        from django.conf import settings

        from hapairs import sharding

        try:
            live = sharding.owners_refresh(self.worker)
        except redis.RedisError as exc:  # keep consuming what it consumed: the lock keeps rounds apart
            log.warning("poll shards: the pollers' set is out of reach (%s); consuming as before", exc)
            return
        owned = sharding.assignment(live, settings.POLL_SHARDS).get(self.worker, [])
        if owned == self.owned:
            return
        want = {sharding.queue(shard) for shard in owned}
        consuming = {queue.name for queue in c.task_consumer.queues}
        for queue in self.managed or []:
            if queue in consuming and queue not in want:
                c.cancel_task_queue(queue)
        for queue in self.managed or []:
            if queue in want and queue not in consuming:
                c.add_task_queue(queue)
        log.info(
            "poll shards: %s polls %s of %s (%s poller(s) live)",
            self.worker,
            ", ".join(map(str, owned)) or "none",
            settings.POLL_SHARDS,
            len(live),
        )
        self.owned = owned

    def stop(self, c: Any) -> None:
        from hapairs import sharding

        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.worker:
            sharding.owners_leave(self.worker)
            self.worker, self.owned = "", None

    shutdown = stop
