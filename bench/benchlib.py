"""What the benchmarks share: JSON figures, and a Django set up on a database of their own.

A benchmark never touches the database DATABASE_URL names: on PostgreSQL it works in
``<name>_bench`` (created if missing, its schema recreated each run); otherwise in a
SQLite file under var/<bench>/.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def emit(**figures) -> None:
    print(json.dumps(figures), flush=True)


def bench_database_url(url: str) -> str:
    """The benchmark's own PostgreSQL database beside the named one (created if missing)."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = f"{parts.path.lstrip('/') or 'mseportal'}_bench"
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return urlunsplit(parts._replace(path=f"/{name}"))


def setup_django(var: Path) -> None:
    """A fresh var directory and database, migrated; DEBUG on unless the environment says."""
    if var.exists():
        shutil.rmtree(var)
    var.mkdir(parents=True)
    os.environ.setdefault("DEBUG", "1")
    os.environ["MSEPORTAL_VAR_DIR"] = str(var)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mseportal.settings")
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith(("postgres://", "postgresql://")):
        os.environ["DATABASE_URL"] = bench_database_url(url)
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    settings.ALLOWED_HOSTS = ["*"]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:  # a fresh schema in the bench's own database
            cursor.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    call_command("migrate", verbosity=0)
