"""Liveness of the portal's own dependencies, for /healthz."""

from __future__ import annotations

import os
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


def broker_state() -> dict[str, str]:
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
            client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
            try:
                client.ping()
            finally:
                client.close()
        else:
            with app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:
        return {"status": "down", "transport": transport, "error": type(exc).__name__}
    return {"status": "ok", "transport": transport}
