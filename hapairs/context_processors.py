"""What every page's template is given besides Django's own."""

from __future__ import annotations

from django.http import HttpRequest

from hapairs import health


def dependencies(request: HttpRequest) -> dict:
    """``broker_unavailable``: the banner every page shows while the task broker is down (asked
    at most every few seconds per process; see hapairs.health.broker_unavailable)."""
    return {"broker_unavailable": health.broker_unavailable()}
