"""A pytest plugin loaded first (``-p`` in pytest.ini): tests default to a dev machine.

pytest-django reads settings before any conftest runs, so the default for DEBUG has
to be set here. The environment still wins (CI sets DATABASE_URL and the broker).

Under pytest-xdist (``make test`` runs two worker processes) each worker gets its own
var directory (SQLite test database, filesystem broker, shard locks) and its own Redis
database: the Celery workers a test starts inherit this environment, so one worker's jobs
and poll rounds are never consumed against the other's test database. pytest-django names
the test databases per worker itself (test_mseportal_gw0, _gw1).
"""

import glob
import os
from urllib.parse import urlsplit, urlunsplit

import pytest

os.environ.setdefault("DEBUG", "1")
# Tests keep their files (SQLite test database, filesystem broker) apart from `make run`'s.
os.environ.setdefault("MSEPORTAL_VAR_DIR", os.path.join(os.path.dirname(os.path.dirname(__file__)), "var", "test"))

WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1" in an xdist worker; "" otherwise


def _redis_db_for_worker(url: str, index: int) -> str:
    """The broker URL with its Redis database moved down by the worker's index (15, 14, …)."""
    parts = urlsplit(url)
    db = int(parts.path.strip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{(db - index) % 16}"))


if WORKER:
    os.environ["MSEPORTAL_VAR_DIR"] = os.path.join(os.environ["MSEPORTAL_VAR_DIR"], WORKER)
    os.makedirs(os.environ["MSEPORTAL_VAR_DIR"], exist_ok=True)
    broker = os.environ.get("CELERY_BROKER_URL", "")
    if broker.startswith(("redis://", "rediss://")):
        os.environ["CELERY_BROKER_URL"] = _redis_db_for_worker(broker, int(WORKER.removeprefix("gw") or 0))


def pytest_sessionstart(session):
    """Django deletes an old SQLite test database but not its WAL files, and a new
    database beside stale WAL files fails with 'disk I/O error': remove all three."""
    for path in glob.glob(os.path.join(os.environ["MSEPORTAL_VAR_DIR"], "test-mseportal.sqlite3*")):
        os.remove(path)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """With ``--dist loadgroup``, a module's tests stay on one worker (its module fixtures, a
    portal with its own PostgreSQL, say, are built once), unless the module names a group."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__ if item.module else item.nodeid))
