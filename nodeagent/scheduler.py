"""One scheduler for every node of a process.

An agent farm runs thousands of nodes in one process; a task or a timer per node and per
pair (each waking every half second) cost more than the work they time. Here one timer
handle serves them all: periodic jobs (a node's step, a pair's heartbeat) sit in one heap,
the earliest due job sets the loop's single wake-up, and each job is a plain function — it
runs inline, starts a task only when it has I/O to wait for (a VIP to bind, a procedure).

A job's first run is spread over its period (``phase``), so a thousand pairs started
together do not beat in the same millisecond. A job that is late (the process was busy or
stopped) runs once and is rescheduled a period after *now*: never a burst of catch-ups.

A wake-up runs every job due within ``SLACK`` of it: thousands of jobs spread over a second
cost a few hundred wake-ups of the loop, not one each (a job runs at most 5 ms early; its
cadence stays that of its due times).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
import time
import weakref
from collections.abc import Callable

log = logging.getLogger("nodeagent.scheduler")

SLACK = 0.005  # seconds: the jobs due this soon run with the one due now


class Job:
    __slots__ = ("fn", "period", "due", "cancelled", "name")

    def __init__(self, fn: Callable[[], None], period: Callable[[], float], due: float, name: str) -> None:
        self.fn, self.period, self.due, self.cancelled, self.name = fn, period, due, False, name

    def cancel(self) -> None:
        self.cancelled = True


class Scheduler:
    """The process's scheduler: ``Scheduler.current()`` inside the running loop."""

    _by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Scheduler] = weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.heap: list[tuple[float, int, Job]] = []
        self.order = itertools.count()
        self.handle: asyncio.TimerHandle | None = None
        self.handle_at = float("inf")

    @classmethod
    def current(cls) -> Scheduler:
        loop = asyncio.get_running_loop()
        s = cls._by_loop.get(loop)
        if s is None:
            s = cls._by_loop[loop] = cls(loop)
        return s

    def every(self, period: Callable[[], float], fn: Callable[[], None], *, name: str = "", phase: bool = True) -> Job:
        """Run ``fn`` every ``period()`` seconds (read again at each run), first within one
        period (at a random point of it with ``phase``, else at once)."""
        first = period() * random.random() if phase else 0.0
        job = Job(fn, period, time.monotonic() + first, name)
        self._push(job)
        return job

    def _push(self, job: Job) -> None:
        heapq.heappush(self.heap, (job.due, next(self.order), job))
        if job.due < self.handle_at:
            self._arm(job.due)

    def _arm(self, when: float) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.handle_at = when
        # the loop's clock is time.monotonic() (the default event loop's)
        self.handle = self.loop.call_at(when, self._run)

    def _run(self) -> None:
        self.handle, self.handle_at = None, float("inf")
        now = time.monotonic()
        heap = self.heap
        horizon = now + SLACK
        while heap and heap[0][0] <= horizon:
            _, _, job = heapq.heappop(heap)
            if job.cancelled:
                continue
            try:
                job.fn()
            except Exception:  # one job's bug never stops the others
                log.exception("scheduled job %s failed", job.name)
            if job.cancelled:
                continue
            try:
                period = max(0.001, float(job.period()))
            except Exception:  # noqa: BLE001 - a broken period: retried in a second
                log.exception("scheduled job %s: no period", job.name)
                period = 1.0
            job.due = job.due + period  # a steady cadence
            if job.due <= now:  # late by a whole period: once, then a period from now
                job.due = now + period
            heapq.heappush(heap, (job.due, next(self.order), job))
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        if heap:
            self._arm(heap[0][0])
