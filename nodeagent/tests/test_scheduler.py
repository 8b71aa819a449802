"""The process's one scheduler (nodeagent.scheduler): jobs keep their cadence, a wake-up runs
every job due within SLACK, a late job runs once (no burst), a failing job stops nothing."""

from __future__ import annotations

import asyncio
import time

from nodeagent import scheduler
from nodeagent.scheduler import Scheduler


def _counting(s: Scheduler) -> list[int]:
    """Count the scheduler's wake-ups (its _run, as the loop calls it)."""
    wakeups = [0]
    run = s._run

    def counted() -> None:
        wakeups[0] += 1
        run()

    s._run = counted  # type: ignore[method-assign]
    return wakeups


def test_many_jobs_share_few_wakeups_and_keep_their_cadence():
    async def go():
        s = Scheduler.current()
        wakeups = _counting(s)
        runs: dict[int, list[float]] = {i: [] for i in range(400)}
        for i in range(400):
            s.every(lambda: 0.2, lambda i=i: runs[i].append(time.monotonic()), name=f"j{i}")
        await asyncio.sleep(1.3)
        return wakeups[0], runs

    wakeups, runs = asyncio.run(go())
    counts = sorted(len(r) for r in runs.values())
    # every job ran once each period (phases spread the first run over one period)
    assert counts[0] >= 5 and counts[-1] <= 7, counts
    gaps = [b - a for r in runs.values() for a, b in zip(r, r[1:], strict=False)]
    assert min(gaps) >= 0.2 - scheduler.SLACK - 0.01, min(gaps)  # early by the slack at most
    # about 2,600 job runs; the loop woke up far fewer times, bounded by the slack
    total = sum(counts)
    assert total >= 2000
    assert wakeups <= 1.3 / scheduler.SLACK + 20, (wakeups, total)
    assert wakeups < total / 4, (wakeups, total)


def test_a_late_job_runs_once_then_a_period_from_now_and_a_failing_job_stops_nothing():
    async def go():
        s = Scheduler.current()
        ran: list[float] = []
        other: list[float] = []

        def boom() -> None:
            raise RuntimeError("a job's bug")

        s.every(lambda: 0.1, lambda: ran.append(time.monotonic()), phase=False, name="steady")
        s.every(lambda: 0.05, boom, name="broken")
        job = s.every(lambda: 0.1, lambda: other.append(time.monotonic()), phase=False, name="cancelled")
        await asyncio.sleep(0.25)
        job.cancel()
        n_other = len(other)
        time.sleep(0.6)  # the loop is stalled for six periods
        stalled_at = time.monotonic()
        await asyncio.sleep(0.25)
        return ran, other, n_other, stalled_at

    ran, other, n_other, stalled_at = asyncio.run(go())
    after = [t for t in ran if t >= stalled_at - 0.01]
    # one catch-up run at once, then the cadence goes on from then: never six in a burst
    assert 2 <= len(after) <= 4, after
    assert all(b - a >= 0.1 - scheduler.SLACK - 0.01 for a, b in zip(after, after[1:], strict=False)), after
    assert len(other) == n_other  # a cancelled job never runs again
    assert n_other >= 2


def test_a_broken_period_is_retried_in_a_second():
    async def go():
        s = Scheduler.current()
        ran: list[float] = []

        def period() -> float:
            raise ValueError("a broken period")

        s.every(period, lambda: ran.append(time.monotonic()), phase=False, name="no-period")
        await asyncio.sleep(0.5)
        return ran

    ran = asyncio.run(go())
    assert len(ran) == 1  # its first run; the next one a second later, not at once in a loop
