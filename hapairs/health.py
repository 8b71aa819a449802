"""Liveness of the portal's own dependencies, for /healthz."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import redis
from django.conf import settings
from django.db import connection

from mseportal.celery import app


def database_state() -> dict[str, str]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means "down"; say which
        return {"status": "down", "engine": connection.vendor, "error": type(exc).__name__}
    return {"status": "ok", "engine": connection.vendor}


def broker_state(timeout: float = 2.0) -> dict[str, str]:
    url = settings.CELERY_BROKER_URL
    if settings.CELERY_BROKER_IS_FILESYSTEM:
        folders = [
            Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS[key]) for key in ("data_folder_in", "processed_folder")
        ]
        missing = [str(folder) for folder in folders if not (folder.is_dir() and os.access(folder, os.W_OK))]
        if missing:
            return {"status": "down", "transport": "filesystem", "error": "folder missing or not writable"}
        return {"status": "ok", "transport": "filesystem"}
    transport = url.split("://", 1)[0]
    try:
        if transport in {"redis", "rediss"}:
            client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
            try:
                client.ping()
            finally:
                client.close()
        else:
            with app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as exc:
        return {"status": "down", "transport": transport, "error": type(exc).__name__}
    return {"status": "ok", "transport": transport}


# --- what the pages say while a dependency is down --------------------------------------
BROKER_RECHECK_SECONDS = 15.0  # a web process asks the broker at most this often for the banner
_broker_seen = {"at": float("-inf"), "down": False}
_broker_lock = threading.Lock()


def broker_failed() -> None:
    """A send to the broker failed just now (dispatch): the banner says so at once."""
    with _broker_lock:
        _broker_seen.update(at=time.monotonic(), down=True)


def broker_unavailable() -> bool:
    """Whether the broker was down when last asked (at most every BROKER_RECHECK_SECONDS, with
    a short timeout): the pages' banner. Never raises."""
    now = time.monotonic()
    with _broker_lock:
        if now - _broker_seen["at"] < BROKER_RECHECK_SECONDS:
            return bool(_broker_seen["down"])
        _broker_seen["at"] = now  # one asker per period; the others read the last answer
    down = broker_state(timeout=0.5)["status"] != "ok"
    with _broker_lock:
        _broker_seen["down"] = down
    return down


def dependency_of(exc: BaseException | None) -> str | None:
    """ "database" or "broker" when ``exc`` says the portal cannot reach it, else None."""
    from django.db import InterfaceError, OperationalError
    from kombu.exceptions import OperationalError as BrokerOperationalError

    if isinstance(exc, (OperationalError, InterfaceError)):
        return "database"
    if isinstance(exc, (BrokerOperationalError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        return "broker"
    return None
