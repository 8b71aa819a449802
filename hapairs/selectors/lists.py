"""The operator's long lists, read by seek pages (selectors.paging) on indexes matching
their sorts, with the counts the database keeps (hapairs.models.Tally): the Mobility
Services Engines list, the HA overview, a pair's Events Log. A bounded number of queries
at any fleet size (test_paging, bench/bench_pages.py)."""

from __future__ import annotations

from django.db.models import Count, Exists, F, JSONField, OuterRef, Q, QuerySet, Subquery

from hapairs.models import Alert, Appliance, HAEvent, HAPair, SecondaryListing, Tally
from hapairs.selectors.paging import Page, PageWhere, seek_page

# a line of the Events Log, as the status screen and the API show it: the event, its "why"
# when nobody asked for it (an agent's or the portal's own decision), the job that caused it,
# with who asked for it and why, and the decision on the alert it raised (sent, held back)
EVENT_FIELDS = ("code", "description", "generated_by", "timestamp", "remarks", "severity", "job_id", "why")
EVENT_CAUSE = {
    "requested_by": F("job__requested_by__username"),
    "reason": F("job__reason"),
    "alert_decision": Subquery(
        Alert.objects.filter(event_id=OuterRef("pk")).order_by("-pk").values("decision")[:1], output_field=JSONField()
    ),
}


def tally(name: str, subject_id: int = 0) -> int:
    """A count the database keeps (``hapairs.models.Tally``): one row read, whatever the size."""
    return Tally.objects.filter(name=name, subject_id=subject_id).values_list("value", flat=True).first() or 0


def tallies_recount() -> dict[tuple[str, int], int]:
    """What every tally should say, counted the slow way (the tests' and an operator's check)."""
    counts = {
        (Tally.APPLIANCES, 0): Appliance.objects.count(),
        (Tally.SECONDARIES, 0): HAPair.objects.values("secondary_id").distinct().count(),
    }
    for pair_id, n in (
        HAEvent.objects.filter(pair__isnull=False).values_list("pair_id").annotate(n=Count("pk")).order_by()
    ):
        counts[(Tally.PAIR_EVENTS, pair_id)] = n
    return counts


APPLIANCE_SORTS = {
    # ?sort= value: (label, ordering); each has its index (Appliance.Meta.indexes) and ends
    # with a unique field
    "name": ("Device Name", ("name",)),
    "type": ("Device Type", ("device_type", "name")),
    "ip": ("IP Address", ("hm_ip",)),
    "version": ("Version", ("version", "name")),
    "reachability": ("Reachability Status", ("reachability", "name")),
}


def appliance_ordering(sort: str, descending: bool = False) -> tuple[str, ...]:
    ordering = APPLIANCE_SORTS.get(sort, APPLIANCE_SORTS["name"])[1]
    return tuple(f"-{field}" for field in ordering) if descending else ordering


IP_CHARACTERS = frozenset("0123456789.")


def appliance_filtered(*, q: str = "", device_type: str = "", reachability: str = "", paired: str = "") -> QuerySet:
    """The Mobility Services Engines list's filters, as a queryset (count it, then page it)."""
    queryset = Appliance.objects.defer("password_ciphertext")
    if q and set(q) <= IP_CHARACTERS:
        queryset = queryset.filter(Q(name__icontains=q) | Q(hm_ip__startswith=q) | Q(vip__startswith=q))
    elif q:  # no address starts with it: the name alone (the other two cost a cast of every row)
        queryset = queryset.filter(name__icontains=q)
    if device_type:
        queryset = queryset.filter(device_type=device_type)
    if reachability:
        queryset = queryset.filter(reachability=reachability)
    if paired:
        as_primary = Exists(HAPair.objects.filter(primary=OuterRef("pk")))
        as_secondary = Exists(HAPair.objects.filter(secondary=OuterRef("pk")))
        queryset = {
            "yes": queryset.filter(as_primary),
            "secondary": queryset.filter(as_secondary),
            "no": queryset.filter(~as_primary & ~as_secondary),
        }.get(paired, queryset)
    return queryset


def appliance_total(queryset: QuerySet, *, filtered: bool) -> int:
    """How many the list holds: the database's tally for the whole fleet (one row, at any
    size); a filtered list is counted (its filters narrow what is read)."""
    return queryset.count() if filtered else tally(Tally.APPLIANCES)


def appliance_page(
    queryset: QuerySet,
    *,
    sort: str = "name",
    descending: bool = False,
    offset: int = 0,
    limit: int = 50,
    where: PageWhere | None = None,
) -> list[dict]:
    """One sorted page of the list, each row with its pair and the primaries it backs (see
    ``appliance_seek``): two queries at any size."""
    return appliance_seek(
        queryset, sort=sort, descending=descending, where=where or PageWhere(offset=offset, limit=limit)
    ).rows


def appliance_seek(queryset: QuerySet, *, sort: str, descending: bool, where: PageWhere) -> Page:
    """``appliance_page`` as a ``Page`` (for the pager), read by seek on the sort's own index.
    Each row is what the list shows, as a dict: the appliance's ``APPLIANCE_LIST_FIELDS``;
    ``secondary``, ``maintenance`` and ``maintenance_reason`` of the pair it is primary of
    (None when it is not); ``backs``, the names of the primaries it backs, by slot."""
    rows = queryset.values(
        *APPLIANCE_LIST_FIELDS,
        secondary=F("ha_pair_as_primary__secondary__name"),
        maintenance=F("ha_pair_as_primary__maintenance"),
        maintenance_reason=F("ha_pair_as_primary__maintenance_reason"),
    )
    page = seek_page(rows, appliance_ordering(sort, descending), where)
    backs: dict[int, list[str]] = {row["id"]: [] for row in page.rows}
    if backs:
        backed = HAPair.objects.filter(secondary_id__in=backs).order_by("slot")
        for secondary_id, primary in backed.values_list("secondary_id", "primary__name"):
            backs[secondary_id].append(primary)
    for row in page.rows:
        row["backs"] = backs[row["id"]]
    return page


# what the list shows of each appliance (no JSON or dates it does not show)
APPLIANCE_LIST_FIELDS = ("id", "name", "device_type", "hm_ip", "vip", "version", "reachability", "services")


def ha_overview_secondaries() -> QuerySet[SecondaryListing]:
    """Appliances that back at least one primary, as the database lists them by name (page
    them with ha_overview; their count is the tally of secondaries)."""
    return SecondaryListing.objects.all()


HA_OVERVIEW_ORDERING = ("name",)


def ha_overview(
    secondaries: QuerySet[SecondaryListing], *, offset: int = 0, limit: int = 50, where: PageWhere | None = None
) -> list[tuple[dict, list[dict]]]:
    """The N:1 view: each secondary with the primaries it backs. Two queries per page."""
    return ha_overview_seek(secondaries, where or PageWhere(offset=offset, limit=limit)).rows


def ha_overview_seek(secondaries: QuerySet[SecondaryListing], where: PageWhere) -> Page:
    """``ha_overview`` as a ``Page``: rows are (secondary, [its pairs by slot]), as dicts of
    what the overview shows (``HA_OVERVIEW_FIELDS``; each pair's ``HA_OVERVIEW_PAIR_FIELDS``
    and its primary's ``primary_name`` and ``primary_type``)."""
    fields = {field: F(f"appliance__{field}") for field in HA_OVERVIEW_FIELDS}
    page = seek_page(secondaries.values("name", id=F("appliance_id"), **fields), HA_OVERVIEW_ORDERING, where)
    by_secondary: dict[int, list[dict]] = {row["id"]: [] for row in page.rows}
    if by_secondary:
        pairs = HAPair.objects.filter(secondary_id__in=by_secondary).order_by("slot")
        for pair in pairs.values(
            "secondary_id",
            *HA_OVERVIEW_PAIR_FIELDS,
            primary_name=F("primary__name"),
            primary_type=F("primary__device_type"),
        ):
            by_secondary[pair["secondary_id"]].append(pair)
    rows = [(secondary, by_secondary[secondary["id"]]) for secondary in page.rows]
    return Page(rows, more_before=page.more_before, more_after=page.more_after, moved_to=page.moved_to)


HA_OVERVIEW_FIELDS = ("hm_ip", "device_type", "version")  # of the secondary, beside its id and name
HA_OVERVIEW_PAIR_FIELDS = ("heartbeat", "status_text", "maintenance")


EVENTS_ORDERING = ("-timestamp", "-id")  # HAEvent's index haevent_pair_time_id


def pair_events_seek(pair: HAPair, where: PageWhere, *, filters: Q | None = None) -> Page:
    """A page of the pair's Events Log, newest first: ``EVENT_FIELDS`` and ``EVENT_CAUSE`` of
    each (and its id, for the seek), narrowed by ``filters`` (the API's). One query."""
    events = HAEvent.objects.filter(pair=pair)
    if filters:
        events = events.filter(filters)
    events = events.values("id", *EVENT_FIELDS, **EVENT_CAUSE)
    return seek_page(events, EVENTS_ORDERING, where)
