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
* **Owners: a shard sticks to one worker.** Each worker that consumes the poll queues keeps
  its name in a Redis sorted set (scored by when it lapses, on Redis's clock) every
  ``OWNERS_REFRESH`` seconds, reads the live names, and consumes only the queues of the
  shards :func:`assignment` gives it (Celery's own ``add_task_queue``/``cancel_task_queue``:
  ``mseportal.worker_steps``). Every worker reading the same names computes the same
  assignment, so each shard has one poller, its TLS connections stay open round after round,
  and each agent keeps one connection to the portal instead of one per worker. A worker
  started on any host is in the set at its start and takes its shards within a refresh,
  without a restart of the others; a worker stopped leaves the set at once, a killed one when
  its entry lapses (``OWNERS_TTL``), and the others take its shards. Meanwhile a shard may
  briefly have two consumers (the lock below keeps their rounds apart) or, after a kill, none
  for up to ``OWNERS_TTL`` + ``OWNERS_REFRESH`` (its messages wait, then expire with their
  round). On the filesystem broker (one host) every worker consumes every queue, as before.
* **Rounds**: each shard's last round (appliances, unreachable, seconds of network and
  database, when it finished, which worker) in Redis when the broker is Redis, else in
  files under ``MSEPORTAL_VAR_DIR`` (the filesystem broker is one host too). Cheap to read
  for ``manage.py poll_status`` and the benchmark.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
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
OWNERS_KEY = "mseportal:poll-workers:{database}"
OWNERS_REFRESH = 2.0  # seconds between a worker's refreshes of its entry and its shards
OWNERS_TTL = 6.0  # an entry not refreshed for this long has lapsed (its worker is gone)


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


# --- which worker polls which shard ------------------------------------------------------------
def _rank(shard: int, worker: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{shard}/{worker}".encode(), digest_size=8).digest(), "big")


def assignment(workers: list[str], shards: int) -> dict[str, list[int]]:
    """Each shard's worker: rendezvous hashing with bounded loads. A shard goes to the worker
    that ranks highest for it among those with room left: every worker gets shards // workers
    shards or one more (the first shards % workers to get there), so the load is even, and a
    worker joining or leaving moves few shards besides its own. Depends only on the set of
    names: every worker computes the same."""
    names = sorted(set(workers))
    owned: dict[str, list[int]] = {name: [] for name in names}
    if not names:
        return owned
    base, extra = divmod(shards, len(names))
    full = 0  # workers that have base + 1 shards (at most ``extra`` may)
    for shard in range(shards):
        for name in sorted(names, key=lambda n: _rank(shard, n), reverse=True):
            count = len(owned[name])
            if count < base or (count == base and full < extra):
                owned[name].append(shard)
                full += count == base
                break
    return owned


def owners_supported() -> bool:
    """Sticky shards need a broker shared by every host (Redis); on the filesystem broker
    (one host) every worker consumes every poll queue."""
    return _store()[0] is not None


def _owners_key() -> str:
    return OWNERS_KEY.format(database=str(settings.DATABASES["default"]["NAME"]))


def owners_refresh(worker: str) -> list[str]:
    """Keep ``worker`` in the set of live pollers; the live names (sorted). Raises RedisError."""
    client, _ = _store()
    assert client is not None, "owners_refresh needs the Redis broker (owners_supported)"
    seconds, micros = client.time()  # Redis's clock, the same for every host
    now = seconds + micros / 1e6
    key = _owners_key()
    pipe = client.pipeline()
    pipe.zadd(key, {worker: now + OWNERS_TTL})
    pipe.zremrangebyscore(key, "-inf", now)
    pipe.zrange(key, 0, -1)
    pipe.expire(key, int(OWNERS_TTL * 10))  # the whole set goes when no worker is left
    names = pipe.execute()[2]
    return sorted(name.decode() for name in names)


def owners_leave(worker: str) -> None:
    """``worker`` stops polling: out of the set now, so the others take its shards at once."""
    client, _ = _store()
    if client is None:
        return
    try:
        client.zrem(_owners_key(), worker)
    except redis.RedisError as exc:
        log.warning("poll shards: could not leave the pollers' set (it lapses in %s s): %s", OWNERS_TTL, exc)


def owners(shards: int | None = None) -> dict[str, list[int]]:
    """The live pollers and the shards each consumes (for poll_status); {} when not known."""
    client, _ = _store()
    if client is None:
        return {}
    try:
        seconds, micros = client.time()
        found: list[bytes] = client.zrangebyscore(_owners_key(), seconds + micros / 1e6, "+inf")  # type: ignore[assignment]
        names = [name.decode() for name in found]
    except redis.RedisError:
        return {}
    return assignment(names, shards or settings.POLL_SHARDS)
