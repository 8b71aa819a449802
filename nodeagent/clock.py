"""Time helpers of the node agent: its timestamp format and a bounded wait."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime


def now_iso(ts: float | None = None) -> str:
    """``ts`` (default: now) as an ISO 8601 UTC timestamp with milliseconds."""
    return datetime.fromtimestamp(time.time() if ts is None else ts, tz=UTC).isoformat(timespec="milliseconds")


async def wait_event(ev: asyncio.Event, timeout: float) -> None:
    """Wait for ``ev`` at most ``timeout`` seconds. (asyncio.timeout, not wait_for: on 3.11
    wait_for can swallow a cancellation that races with the event being set.)"""
    try:
        async with asyncio.timeout(timeout):
            await ev.wait()
    except TimeoutError:
        pass
