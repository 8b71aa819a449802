"""A pytest plugin loaded first (``-p`` in pytest.ini): tests default to a dev machine.

pytest-django reads settings before any conftest runs, so the default for DEBUG has
to be set here. The environment still wins (CI sets DATABASE_URL and the broker).
"""

import glob
import os

os.environ.setdefault("DEBUG", "1")
# Tests keep their files (SQLite test database, filesystem broker) apart from `make run`'s.
os.environ.setdefault("MSEPORTAL_VAR_DIR", os.path.join(os.path.dirname(os.path.dirname(__file__)), "var", "test"))


def pytest_sessionstart(session):
    """Django deletes an old SQLite test database but not its WAL files, and a new
    database beside stale WAL files fails with 'disk I/O error': remove all three."""
    for path in glob.glob(os.path.join(os.environ["MSEPORTAL_VAR_DIR"], "test-mseportal.sqlite3*")):
        os.remove(path)
