"""The health report as data: frozen dataclasses that ``hapairs.reports`` builds from the
fleet's rows and the HTML and text templates render. Pure: no ORM, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

TREND_STEADY_PERCENT = 20  # within ±20 % between the first and second half: steady
BAR_MAX_PX = 40

# The five states of the fleet summary, most urgent first (a pair counts under one).
HEALTH_LABELS = {
    "maintenance": "In maintenance",
    "unreachable": "Unreachable",
    "failed_over": "Failed over",
    "degraded": "Degraded",
    "active": "Active",
}
HEALTH_COLOURS = {  # text, background: the report's pills
    "active": ("#1f7a3a", "#dff3e4"),
    "degraded": ("#a05a00", "#fff1d6"),
    "failed_over": ("#a05a00", "#fff1d6"),
    "maintenance": ("#0b5cad", "#e8f1fb"),
    "unreachable": ("#b3261e", "#fbe9e8"),
}


# --- the data ---------------------------------------------------------------------------
@dataclass(frozen=True)
class FleetSummary:
    appliances: int
    appliances_unreachable: int
    pairs: int
    active: int
    degraded: int
    failed_over: int
    maintenance: int
    unreachable: int
    split_brain: int  # pairs in split brain now (counted as degraded too)


@dataclass(frozen=True)
class Bar:
    """One bucket of the heartbeat chart (an hour, or a day for longer periods)."""

    start: datetime
    mean_ms: float | None
    height: int  # px, 0 when there is no sample
    label: str


@dataclass(frozen=True)
class HeartbeatTrend:
    samples: int
    mean_ms: float | None
    low_ms: float | None
    high_ms: float | None
    first_half_ms: float | None
    second_half_ms: float | None
    bucket: str  # "hour" | "day"
    bars: list[Bar]

    chart_height = BAR_MAX_PX

    @property
    def bar_width(self) -> int:
        return max(3, min(14, 360 // max(1, len(self.bars))))

    @property
    def peak_ms(self) -> float | None:
        """The tallest bar's value (the chart's scale runs from 0 to it)."""
        return max((bar.mean_ms for bar in self.bars if bar.mean_ms is not None), default=None)

    @property
    def first_start(self) -> datetime | None:
        return self.bars[0].start if self.bars else None

    @property
    def last_start(self) -> datetime | None:
        return self.bars[-1].start if self.bars else None

    @property
    def axis_format(self) -> str:
        return "d M H:i" if self.bucket == "hour" else "D d M"

    @property
    def change_percent(self) -> float | None:
        if not self.first_half_ms or self.second_half_ms is None:
            return None
        return (self.second_half_ms - self.first_half_ms) / self.first_half_ms * 100

    @property
    def direction(self) -> str:
        """'rising', 'falling', 'steady', or 'no data'."""
        change = self.change_percent
        if self.samples == 0:
            return "no data"
        if change is None or abs(change) < TREND_STEADY_PERCENT:
            return "steady"
        return "rising" if change > 0 else "falling"

    @property
    def words(self) -> str:
        """'rising: 1.2 → 3.4 ms (+183 %)', 'steady around 1.2 ms', 'no samples in the period'."""
        if self.samples == 0:
            return "no samples in the period"
        if self.direction == "steady":
            return f"steady around {self.mean_ms:.1f} ms"
        return (
            f"{self.direction}: {self.first_half_ms:.1f} → {self.second_half_ms:.1f} ms ({self.change_percent:+.0f} %)"
        )


@dataclass(frozen=True)
class Actor:
    """Who acted: an operator (with the job's reason) or the agents by themselves."""

    kind: str  # "operator" | "agents" | "portal"
    name: str
    reason: str = ""
    job_id: int | None = None
    what: str = ""  # "failover" / "failback" for the agents' own action

    @property
    def who_why(self) -> str:
        """The sentence without the job number (for a line that already names the job)."""
        if self.kind != "operator":
            return self.sentence
        return f"requested by {self.name}" + (f": “{self.reason}”" if self.reason else " (no reason given)")

    @property
    def sentence(self) -> str:
        if self.kind == "agents":
            return f"automatic {self.what or 'action'} by the agents"
        if self.kind == "portal":
            return f"detected by {self.name}"
        why = f": “{self.reason}”" if self.reason else " (no reason given)"
        job = f" (job #{self.job_id})" if self.job_id else ""
        return f"requested by {self.name}{job}{why}"


@dataclass(frozen=True)
class Switch:
    kind: str  # "failover" | "failback"
    at: datetime
    actor: Actor
    generation: int | None
    remarks: str = ""


@dataclass(frozen=True)
class DrillReport:
    """A failover drill of the period, with its scorecard (hapairs.drills.scorecard_rows)."""

    drill_id: int
    at: datetime
    by: str
    status: str  # the job's, as shown
    rows: list[tuple[str, str]]  # (label, value); empty while it runs


@dataclass(frozen=True)
class FailedJob:
    job_id: int
    kind: str
    at: datetime
    target: str
    actor: Actor
    error: str


@dataclass(frozen=True)
class SplitBrainAlert:
    at: datetime
    remarks: str


@dataclass(frozen=True)
class PairReport:
    pair_id: int
    primary: str
    secondary: str
    health: str  # a HEALTH_LABELS key
    status: str  # the status screen's sentence
    primary_state: str
    secondary_state: str
    primary_reachable: bool
    secondary_reachable: bool
    heartbeat: str
    replication: str
    sync_percent: int
    mean_heartbeat_ms: float | None
    failover_type: str
    failback_type: str
    split_brain_now: bool
    maintenance: str  # "" or "by alice: reason"
    trend: HeartbeatTrend
    switches: list[Switch] = field(default_factory=list)
    failed_jobs: list[FailedJob] = field(default_factory=list)
    split_brains: list[SplitBrainAlert] = field(default_factory=list)
    drills: list[DrillReport] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.primary} → {self.secondary}"

    @property
    def health_label(self) -> str:
        return "Split brain" if self.split_brain_now else HEALTH_LABELS[self.health]

    @property
    def health_colours(self) -> tuple[str, str]:
        return HEALTH_COLOURS["unreachable" if self.split_brain_now else self.health]

    @property
    def failovers(self) -> list[Switch]:
        return [s for s in self.switches if s.kind == "failover"]

    @property
    def failbacks(self) -> list[Switch]:
        return [s for s in self.switches if s.kind == "failback"]


@dataclass(frozen=True)
class ExpiringLicense:
    license_id: int
    appliance: str
    feature: str
    sku: str
    count: int
    expires_on: date
    days_left: int  # negative: already expired
    is_evaluation: bool
    status: str

    @property
    def when(self) -> str:
        if self.days_left < 0:
            days = -self.days_left
            return f"expired {days} day{'s' if days != 1 else ''} ago"
        if self.days_left == 0:
            return "expires today"
        return f"{self.days_left} day{'s' if self.days_left != 1 else ''} left"


@dataclass(frozen=True)
class HealthReport:
    generated_at: datetime
    period_start: datetime
    period_end: datetime
    period_days: int
    fleet: FleetSummary
    pairs: list[PairReport]
    licenses: list[ExpiringLicense]
    other_failed_jobs: list[FailedJob]  # jobs on no pair (an appliance's license install, …)
    license_warn_days: int = 30

    @property
    def failovers(self) -> int:
        return sum(len(p.failovers) for p in self.pairs)

    @property
    def failbacks(self) -> int:
        return sum(len(p.failbacks) for p in self.pairs)

    @property
    def failed_jobs(self) -> int:
        return sum(len(p.failed_jobs) for p in self.pairs) + len(self.other_failed_jobs)

    @property
    def split_brain_alerts(self) -> int:
        return sum(len(p.split_brains) for p in self.pairs)

    @property
    def attention(self) -> list[PairReport]:
        return [p for p in self.pairs if p.health != "active" or p.split_brain_now]

    @property
    def period_text(self) -> str:
        return "the last 24 hours" if self.period_days == 1 else f"the last {self.period_days} days"

    @property
    def headline(self) -> str:
        """One line for a subject: what needs attention first."""
        fleet = self.fleet
        if not fleet.pairs:
            return f"{fleet.appliances} appliance{'s' if fleet.appliances != 1 else ''}, no HA pairs"
        parts = [f"{fleet.active} of {fleet.pairs} pair{'s' if fleet.pairs != 1 else ''} active"]
        for count, words in (
            (fleet.failed_over, "failed over"),
            (fleet.degraded, "degraded"),
            (fleet.unreachable, "unreachable"),
            (fleet.maintenance, "in maintenance"),
        ):
            if count:
                parts.append(f"{count} {words}")
        if self.failovers:
            parts.append(f"{self.failovers} failover{'s' if self.failovers != 1 else ''}")
        if self.licenses:
            parts.append(f"{len(self.licenses)} license{'s' if len(self.licenses) != 1 else ''} expiring")
        return ", ".join(parts)
