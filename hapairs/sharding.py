"""The poll's shards: which appliances each holds, one poller per shard at a time, and
what each shard's last round did.

* **Assignment.** ``MSEPORTAL_POLL_SHARDS`` shards; an appliance's shard is a hash of its
  *anchor* — the pk of its pair's secondary when it is a pair's primary, its own pk
  otherwise — so both nodes of a pair (and every primary one secondary backs) are polled
  in the same round, and a pair's status is always written from one view of both nodes.
  Sharding nodes independently would write a pair from one fresh side and one side up to
  an interval old: during a switchover the new side in charge beside the old side's stale
  "in charge" reads as a split brain. The hash is Knuth's multiplicative one (the anchor
  times 2^32/φ, mod 2^32, scaled to the shard count), written once, in SQL: a shard's
  appliances are one query, with no column to keep up to date. A pk never changes, so an
  appliance moves only when it is paired or unpaired (a primary joins its secondary).
* **One poller per shard**: a PostgreSQL advisory lock held for the round (released with
  the connection if the worker dies); on SQLite (one host by definition) a ``flock``.
* **Rounds**: each shard's last round (appliances, unreachable, seconds of network and
  database, when it finished, which worker) in Redis when the broker is Redis, else in
  files under ``MSEPORTAL_VAR_DIR`` (the filesystem broker is one host too). Cheap to read
  for ``manage.py poll_status`` and the benchmark.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import redis
from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import BigIntegerField, Count, ExpressionWrapper, F, Min, Q, QuerySet
from django.db.models.functions import Coalesce

from hapairs.models import Appliance

log = logging.getLogger(__name__)

QUEUE_PREFIX = "poll."
HASH_MULTIPLIER = 2654435761  # 2^32 / the golden ratio, odd: consecutive pks spread evenly
HASH_RANGE = 2**32
LOCK_CLASS = 0x6D736570  # "msep": the first key of the two-key advisory locks (the shard is the second)
ROUNDS_KEY = "mseportal:poll-rounds:{database}"


def queue(shard: int) -> str:
    """The Celery queue a shard's polls go to."""
    return f"{QUEUE_PREFIX}{shard}"


def queues(shards: int) -> list[str]:
    return [queue(shard) for shard in range(shards)]


def shard_expression(shards: int) -> ExpressionWrapper:
    """SQL for an appliance's shard (0 … shards - 1), for ``.alias``/``.annotate``."""
    anchor = Coalesce(F("ha_pair_as_primary__secondary_id"), F("pk"))
    return ExpressionWrapper(
        anchor * HASH_MULTIPLIER % HASH_RANGE * shards / HASH_RANGE, output_field=BigIntegerField()
    )


def appliances_of(shard: int, shards: int) -> QuerySet[Appliance]:
    return Appliance.objects.alias(shard=shard_expression(shards)).filter(shard=shard)


def polled_by_shard(shards: int) -> dict[int, dict[str, Any]]:
    """What the database says of each shard: its appliances, how many were never polled, and
    the oldest last poll among them (one query)."""
    rows = (
        Appliance.objects.annotate(shard=shard_expression(shards))
        .order_by()
        .values("shard")
        .annotate(
            appliances=Count("pk"),
            never=Count("pk", filter=Q(last_polled_at__isnull=True)),
            oldest=Min("last_polled_at"),
        )
    )
    found = {row["shard"]: row for row in rows}
    return {shard: found.get(shard, {"appliances": 0, "never": 0, "oldest": None}) for shard in range(shards)}


# --- one poller per shard -----------------------------------------------------------------
@contextlib.contextmanager
def lock(shard: int) -> Iterator[bool]:
    """Hold shard ``shard``'s poll lock while inside; yields False (at once) if another holds it."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [LOCK_CLASS, shard])
            held = bool(cursor.fetchone()[0])
        try:
            yield held
        finally:
            if held:
                try:
                    with connection.cursor() as cursor:
                        cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [LOCK_CLASS, shard])
                except DatabaseError:  # a lost connection took the lock with it
                    log.warning("shard %s: the poll lock went with the database connection", shard)
        return
    folder = Path(settings.VAR_DIR) / "poll-locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"shard-{shard}.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- the last round of each shard -----------------------------------------------------------
@cache
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def _store() -> tuple[redis.Redis | None, str]:
    url = settings.CELERY_BROKER_URL
    database = str(settings.DATABASES["default"]["NAME"])  # one portal: its database
    if url.startswith(("redis://", "rediss://", "unix://")):
        return _redis(url), ROUNDS_KEY.format(database=database)
    return None, str(Path(settings.VAR_DIR) / "poll-rounds")


def round_record(shard: int, figures: dict[str, Any]) -> None:
    """Keep ``figures`` as shard ``shard``'s last round (never fails the poll: logged)."""
    client, where = _store()
    text = json.dumps({**figures, "shard": shard})
    try:
        if client is not None:
            client.hset(where, str(shard), text)
        else:
            folder = Path(where)
            folder.mkdir(parents=True, exist_ok=True)
            partial = folder / f".shard-{shard}.{os.getpid()}"
            partial.write_text(text)
            partial.replace(folder / f"shard-{shard}.json")
    except (OSError, redis.RedisError) as exc:
        log.warning("shard %s: could not keep the round's figures: %s", shard, exc)


def round_of(shard: int) -> dict[str, Any] | None:
    """Shard ``shard``'s last round, or None."""
    client, where = _store()
    try:
        if client is not None:
            text = client.hget(where, str(shard))
        else:
            path = Path(where) / f"shard-{shard}.json"
            text = path.read_text() if path.exists() else None
    except (OSError, redis.RedisError):
        return None
    return json.loads(text) if text else None


def rounds() -> dict[int, dict[str, Any]]:
    """Each shard's last round, by shard."""
    client, where = _store()
    if client is not None:
        raw = {int(key): value for key, value in client.hgetall(where).items()}
    else:
        raw = {int(path.stem.split("-")[1]): path.read_text() for path in Path(where).glob("shard-*.json")}
    return {shard: json.loads(text) for shard, text in sorted(raw.items())}


def rounds_clear() -> None:
    client, where = _store()
    if client is not None:
        client.delete(where)
    else:
        for path in Path(where).glob("shard-*.json"):
            path.unlink(missing_ok=True)
