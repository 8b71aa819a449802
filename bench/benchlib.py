"""What the benchmarks share: JSON figures, a Django set up on a database of their own, and
the record of their figures (var/bench-results/<bench>.json → docs/benchmarks.md).

A benchmark never touches the database DATABASE_URL names: on PostgreSQL it works in
``<name>_bench`` (created if missing, its schema recreated each run); otherwise in a
SQLite file under var/<bench>/. With DEBUG=0 it runs the production profile (cached
templates, manifest static files) with a throwaway secret key, on plain HTTP.
"""

from __future__ import annotations

import json
import os
import platform
import re
import secrets
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
RESULTS = REPO / "var" / "bench-results"
BENCHMARKS_MD = REPO / "docs" / "benchmarks.md"


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
    production = os.environ["DEBUG"].strip().lower() in ("0", "false", "no", "off", "")
    if production:  # the production profile, minus what a bench on loopback cannot have
        os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
        os.environ.setdefault("ALLOWED_HOSTS", "testserver,127.0.0.1,localhost")
        os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
        os.environ.setdefault("MSEPORTAL_STATIC_ROOT", str(var / "staticfiles"))
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
    if production:  # {% static %} reads the manifest
        call_command("collectstatic", interactive=False, verbosity=0)


# --- the record: var/bench-results/<bench>.json → docs/benchmarks.md -----------------------
def machine_description() -> dict:
    """nproc, the CPU model and the RAM of this machine (Linux's /proc; best effort elsewhere)."""
    cpu = platform.processor() or platform.machine()
    ram_gb = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gb": ram_gb}


def database_description() -> str:
    """The database Django uses, vendor and version ("PostgreSQL 15.20", "SQLite 3.40.1");
    "none" when the bench runs without Django."""
    from django.conf import settings

    if not settings.configured:
        return "none"
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            return f"PostgreSQL {cursor.fetchone()[0].split()[0]}"
    if connection.vendor == "sqlite":
        import sqlite3

        return f"SQLite {sqlite3.sqlite_version}"
    return connection.display_name


def record(bench_name: str, rows: list[dict], *, title: str = "", notes: str = "") -> Path:
    """Save a bench's figures to var/bench-results/<bench_name>.json and regenerate
    docs/benchmarks.md from every JSON file there.

    A row: ``figure`` (what), ``value`` and ``unit``, ``floor`` (what the same run measured
    as the least such a figure can be; None when there is none), ``ratio`` (value ÷ floor),
    ``target`` (a sentence: "≤ 3× floor", "equal", "≤ 2 s") and ``ok`` (bool); other keys
    are kept in the JSON. The machine, the database and the date are added here."""
    if not bench_name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"a bench name is letters, digits, - and _: {bench_name!r}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "bench": bench_name,
        "title": title or bench_name,
        "notes": notes,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_description(),
        "database": database_description(),
        "rows": rows,
    }
    path = RESULTS / f"{bench_name}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    write_benchmarks_md()
    return path


def _cell(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).replace("|", "\\|")


def _section(result: dict) -> str:
    machine = result.get("machine", {})
    ram = f", {machine['ram_gb']} GB RAM" if machine.get("ram_gb") else ""
    lines = [
        f"## {result.get('title') or result['bench']}",
        "",
        f"{result.get('date', '?')} · {machine.get('nproc', '?')} × {machine.get('cpu', '?')}{ram} · "
        f"database: {result.get('database', '?')} · `var/bench-results/{result['bench']}.json`",
        "",
    ]
    if result.get("notes"):
        lines += [result["notes"], ""]
    lines += ["| figure | value | floor | ratio | target | met |", "|---|---:|---:|---:|---|---|"]
    for row in result.get("rows", []):
        unit = f" {row['unit']}" if row.get("unit") else ""
        value = f"{_cell(row.get('value'))}{unit}" if row.get("value") is not None else "—"
        floor = f"{_cell(row.get('floor'))}{unit}" if row.get("floor") is not None else "—"
        lines.append(
            f"| {_cell(row.get('figure'))} | {value} | {floor} | {_cell(row.get('ratio'))} | "
            f"{_cell(row.get('target'))} | {_cell(row.get('ok'))} |"
        )
    return "\n".join(lines) + "\n"


SECTION = re.compile(r"<!-- bench:([\w-]+) -->\n.*?<!-- /bench:\1 -->\n", re.S)


def write_benchmarks_md() -> None:
    """docs/benchmarks.md: one section per bench, by name, from its JSON file under
    var/bench-results; a section already there whose JSON this machine lacks is kept."""
    sections = {}
    if BENCHMARKS_MD.exists():
        sections = {found.group(1): found.group(0) for found in SECTION.finditer(BENCHMARKS_MD.read_text())}
    for path in sorted(RESULTS.glob("*.json")):
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        name = result.get("bench", path.stem)
        sections[name] = f"<!-- bench:{name} -->\n{_section(result)}<!-- /bench:{name} -->\n"
    head = (
        "# Benchmarks\n\n"
        "Written by `bench/benchlib.record()` from `var/bench-results/*.json` (`make bench`); do not edit\n"
        "by hand. Each figure is printed beside its floor, measured in the same run on the same machine:\n"
        "the ratio is what carries from one machine to another, the milliseconds do not.\n"
    )
    BENCHMARKS_MD.write_text(head + "".join("\n" + sections[name] for name in sorted(sections)))
