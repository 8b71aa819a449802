"""The portal's Prometheus metrics (``GET /metrics``), read from the database at each scrape.

Every figure comes from the rows the portal keeps (appliances, pairs, events, jobs, alerts,
deliveries) and from each poll shard's last round (:mod:`hapairs.sharding`), not from
counters in a process: gunicorn runs several workers and Celery others, and any of them
may answer a scrape, so a counter in one process's memory would be a fraction of the truth
and reset at each restart. A collector of its own (a registry per scrape) yields the
families; ``prometheus_client`` writes the text format.

Names and labels follow the Prometheus conventions: the ``mseportal_`` prefix, base units
(seconds), ``_total`` on counters, labels with a bounded set of values (states, kinds,
statuses, causes, shards: never a name or an address).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, F, Max, Q, Sum
from django.db.models.functions import Abs
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder

from hapairs import sharding
from hapairs.choices import FAILBACK_CODES, FAILOVER_CODES, JobStatus
from hapairs.models import Alert, Appliance, Delivery, HAEvent, HAPair, Job

# a pair's mean heartbeat response, in seconds (the agents measure a datagram's round trip)
HEARTBEAT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# a job, from its claim by a worker to its end
JOB_BUCKETS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


def _counts(queryset, *fields: str) -> Iterator[tuple[tuple[str, ...], int]]:
    for row in queryset.values(*fields).annotate(n=Count("pk")).order_by(*fields):
        yield tuple(str(row[field]) for field in fields), row["n"]


def _counted(family, name: str, what: str, model, *fields: str, **renamed: str) -> Metric:
    """Rows of ``model`` counted by ``fields`` (each its own label) and ``renamed`` (label=field)."""
    labels = {**{field: field for field in fields}, **renamed}
    metric = family(name, what, labels=list(labels))
    for values, n in _counts(model.objects.all(), *labels.values()):
        metric.add_metric(list(values), n)
    return metric


def _buckets(queryset, field: str, bounds: tuple[float, ...], to_value) -> tuple[list[tuple[str, float]], float]:
    """Cumulative bucket counts of ``field`` (one query) and the sum, as HistogramMetricFamily
    takes them."""
    aggregates = {f"le{i}": Count("pk", filter=Q(**{f"{field}__lte": to_value(b)})) for i, b in enumerate(bounds)}
    got = queryset.aggregate(total=Count("pk"), sum=Sum(field), **aggregates)
    buckets = [(repr(b), got[f"le{i}"]) for i, b in enumerate(bounds)] + [("+Inf", got["total"])]
    total = got["sum"]
    if isinstance(total, timedelta):
        total = total.total_seconds()
    return buckets, float(total or 0)


def _switches(codes: frozenset, name: str, what: str) -> CounterMetricFamily:
    """Failovers or failbacks recorded, by cause: an operator's job, or the agents' own decision."""
    family = CounterMetricFamily(name, what, labels=["cause"])
    got = HAEvent.objects.filter(code__in=codes).aggregate(
        operator=Count("pk", filter=Q(job__isnull=False)), automatic=Count("pk", filter=Q(job__isnull=True))
    )
    for cause in ("operator", "automatic"):
        family.add_metric([cause], got[cause])
    return family


class PortalCollector:
    """The families of one scrape."""

    def collect(self) -> Iterator[Metric]:
        yield _counted(
            GaugeMetricFamily,
            "mseportal_appliances",
            "Appliances on record, by reachability at their last poll",
            Appliance,
            "reachability",
        )

        yield _counted(
            GaugeMetricFamily,
            "mseportal_appliance_ha_states",
            "Appliances by the HA state their agent last reported",
            Appliance,
            state="ha_state",
        )

        yield _counted(
            GaugeMetricFamily,
            "mseportal_pairs",
            "HA pairs by heartbeat and data replication status",
            HAPair,
            "heartbeat",
            "replication",
        )

        yield _counted(
            GaugeMetricFamily,
            "mseportal_pair_secondary_states",
            "HA pairs by their secondary's state",
            HAPair,
            state="secondary_state",
        )

        limit_ms = 1000 * settings.CLOCK_SKEW_WARN_SECONDS
        clocks = Appliance.objects.filter(clock_offset_ms__isnull=False).aggregate(
            worst=Max(Abs("clock_offset_ms")),
            skewed=Count("pk", filter=Q(clock_offset_ms__gte=limit_ms) | Q(clock_offset_ms__lte=-limit_ms)),
        )
        yield GaugeMetricFamily(
            "mseportal_appliance_clock_offset_max_seconds",
            "The largest distance of an appliance's clock from the portal's, as the polls measured it",
            value=(clocks["worst"] or 0) / 1000,
        )
        yield GaugeMetricFamily(
            "mseportal_appliances_clock_skewed",
            "Appliances whose clock is MSEPORTAL_CLOCK_SKEW_WARN_SECONDS or more from the portal's",
            value=clocks["skewed"],
        )

        yield GaugeMetricFamily(
            "mseportal_pairs_split_brain",
            "HA pairs whose two nodes both report holding the VIP",
            value=HAPair.objects.filter(split_brain=True).count(),
        )

        measured = HAPair.objects.filter(mean_heartbeat_ms__isnull=False)
        buckets, total_ms = _buckets(measured, "mean_heartbeat_ms", HEARTBEAT_BUCKETS, lambda seconds: seconds * 1000)
        yield HistogramMetricFamily(
            "mseportal_pair_heartbeat_response_seconds",
            "Mean heartbeat response time of each pair, as its secondary last reported it",
            buckets=buckets,
            sum_value=total_ms / 1000,
        )

        yield _switches(FAILOVER_CODES, "mseportal_failovers", "Failovers recorded (a secondary in charge)")
        yield _switches(FAILBACK_CODES, "mseportal_failbacks", "Failbacks recorded (the primary in charge again)")

        yield _counted(CounterMetricFamily, "mseportal_jobs", "Jobs by kind and outcome", Job, "kind", "status")

        durations = HistogramMetricFamily(
            "mseportal_job_duration_seconds",
            "Finished jobs, from a worker's claim to their end, by kind",
            labels=["kind"],
        )
        finished = Job.objects.filter(
            status__in=(JobStatus.SUCCEEDED, JobStatus.FAILED), started_at__isnull=False, finished_at__isnull=False
        ).annotate(took=ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField()))
        for kind in finished.order_by().values_list("kind", flat=True).distinct():
            buckets, total = _buckets(finished.filter(kind=kind), "took", JOB_BUCKETS, lambda s: timedelta(seconds=s))
            durations.add_metric([kind], buckets, total)
        yield durations

        network = GaugeMetricFamily(
            "mseportal_poll_round_seconds",
            "Each poll shard's last round: its seconds on the network (agents) and in the database",
            labels=["shard", "part"],
        )
        polled = GaugeMetricFamily(
            "mseportal_poll_round_appliances", "Each poll shard's last round: appliances polled", labels=["shard"]
        )
        unreachable = GaugeMetricFamily(
            "mseportal_poll_round_unreachable",
            "Each poll shard's last round: appliances that did not answer",
            labels=["shard"],
        )
        ended = GaugeMetricFamily(
            "mseportal_poll_round_finished_timestamp_seconds",
            "Each poll shard's last round: when it ended (Unix time)",
            labels=["shard"],
        )
        for shard, figures in sorted(sharding.rounds().items()):
            label = str(shard)
            for part in ("network", "database"):
                value = figures.get(f"seconds_{part}")
                if isinstance(value, int | float):
                    network.add_metric([label, part], float(value))
            for family, key in ((polled, "appliances"), (unreachable, "unreachable"), (ended, "finished_at")):
                value = figures.get(key)
                if isinstance(value, int | float):
                    family.add_metric([label], float(value))
        yield from (network, polled, unreachable, ended)

        yield _counted(
            CounterMetricFamily, "mseportal_alerts", "Alerts raised, by kind and status", Alert, "kind", "status"
        )

        yield _counted(
            GaugeMetricFamily,
            "mseportal_deliveries",
            "Deliveries (report and alert e-mails, webhooks) on record, by channel and status",
            Delivery,
            "channel",
            "status",
        )


def exposition(accept: str = "") -> tuple[bytes, str]:
    """One scrape, in the format the scraper's Accept header asks for (Prometheus's text
    format by default, OpenMetrics when asked): (body, content type)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PortalCollector())
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
