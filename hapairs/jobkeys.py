"""The idempotency keys the portal sends agents (one per job step), and back from them the
job: agents echo the key on every event a command causes, so the portal knows which job
(and so who, and why) caused it. Pure: no ORM."""

from __future__ import annotations

import re

PREFIX = "mseportal-job-"
_KEY = re.compile(rf"^{re.escape(PREFIX)}(\d{{1,18}}):[A-Za-z0-9_.-]{{1,100}}$")


def job_step_key(job_id: int, step: str) -> str:
    """``mseportal-job-42:switchover``: the same for every retry of the step."""
    return f"{PREFIX}{job_id}:{step}"


def job_of_key(key: str | None) -> int | None:
    """The job id a key names, or None for anything that is not one of our step keys."""
    match = _KEY.match(key or "")
    return int(match.group(1)) if match else None
