"""Each poll shard's last round, and the shards that are overdue: ``python -m django poll_status``.

A shard is overdue when one of its appliances was never polled or not in the last two
intervals (``MSEPORTAL_POLL_SECONDS``): no worker is consuming its queue, or its rounds take
longer than the interval. The command then exits 1, so a monitor can run it.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from hapairs import sharding

HEADER = f"{'shard':>5} {'appliances':>10} {'oldest poll':>11} {'last round':>10} {'network':>8} {'database':>8} {'unreachable':>11}  worker"


def _ago(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.1f} s"


class Command(BaseCommand):
    help = "Print each poll shard's last round (figures, worker) and flag the shards that are overdue."

    def add_arguments(self, parser):
        parser.add_argument(
            "--shards", type=int, default=None, help="the shard count to report on (default: MSEPORTAL_POLL_SHARDS)"
        )

    def handle(self, *args, shards: int | None, **options):
        shards = shards or settings.POLL_SHARDS
        interval = settings.POLL_SECONDS
        now = time.time()
        polled, rounds = sharding.polled_by_shard(shards), sharding.rounds()
        self.stdout.write(f"{shards} poll shards, a round every {interval} s (overdue: no poll for {2 * interval} s)")
        pollers = sharding.owners(shards)
        for name, owned in sorted(pollers.items()):
            self.stdout.write(f"poller {name}: shards {', '.join(map(str, owned)) or 'none'}")
        if sharding.owners_supported() and not pollers:
            self.stdout.write("no poller is live (no celery worker consuming the poll queues)")
        self.stdout.write(HEADER)
        overdue = []
        for shard in range(shards):
            row, kept = polled[shard], rounds.get(shard, {})
            if kept.get("shards") != shards:  # a round of another shard count (before a change of it)
                kept = {}
            oldest = None if row["oldest"] is None or row["never"] else now - row["oldest"].timestamp()
            if row["appliances"] and (oldest is None or oldest > 2 * interval):
                overdue.append(shard)
            finished = now - kept["finished_at"] if "finished_at" in kept else None
            self.stdout.write(
                f"{shard:>5} {row['appliances']:>10} {_ago(oldest) if row['appliances'] else '-':>11} "
                f"{_ago(finished):>10} {kept.get('seconds_network', '-'):>8} {kept.get('seconds_database', '-'):>8} "
                f"{kept.get('unreachable', '-'):>11}  {kept.get('worker', '-')}"
                + ("  OVERDUE" if shard in overdue else "")
            )
        if overdue:
            raise CommandError(
                f"{len(overdue)} shard(s) overdue: {', '.join(map(str, overdue))}. Is a worker consuming "
                f"{', '.join(sharding.queue(shard) for shard in overdue[:4])}{', ...' if len(overdue) > 4 else ''}"
                " (celery worker, with the same MSEPORTAL_POLL_SHARDS as beat)?"
            )
        self.stdout.write(f"Every shard polled within {2 * interval} s.")
