"""Seek (keyset) pages of the long lists, through the views as an operator walks them: the
Mobility Services Engines list in every sort and both directions, the HA overview, a
pair's Events Log. Every row once, in order, across pages, ties in the sort column
included, forwards and back; links that were edited or belong to another list refused with
a sentence, never a 500; the same number of queries at two fleet sizes."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
from django.core import signing
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from hapairs import services
from hapairs.models import Appliance, HAEvent, HAPair
from hapairs.views import _common, ha

pytestmark = pytest.mark.django_db

ROW = re.compile(r'<tr>\s*<td><a href="/mse/([^/"]+)/">')  # the first cell of a list's row (not the inner links)
EVENT = re.compile(r'data-code="[^"]*"><td>[^<]*</td><td>[^<]*</td><td>[^<]*</td><td>([^<]*)</td>')  # its remarks
LINK = re.compile(r'<a href="([^"]+)" rel="(first|prev|next|last)"')
NOTICE = "That page link does not fit this list"
PER_PAGE = 4


@pytest.fixture(autouse=True)
def small_pages(monkeypatch):
    monkeypatch.setattr(_common, "PAGE_SIZE", PER_PAGE)
    monkeypatch.setattr(ha, "EVENTS_PAGE_SIZE", 7)


def links(page: str) -> dict[str, str]:
    return {rel: html.unescape(href) for href, rel in LINK.findall(page)}


def walk(client, url: str, rel: str, rows=ROW) -> list[list[str]]:
    """The rows of each page from ``url`` on, following the ``rel`` link until there is none."""
    path, pages = url.split("?")[0], []
    while url:
        response = client.get(url)
        assert response.status_code == 200, url
        page = response.content.decode()
        pages.append(rows.findall(page))
        following = links(page).get(rel)
        url = path + following if following else ""
        assert len(pages) < 50, "the links go round in circles"
    return pages


def appliances(n: int, offset: int = 0) -> list[Appliance]:
    """``n`` unpaired appliances with ties in every sortable column but the name; their IP
    order is not their name order (last octets of two digits: text and address order agree)."""
    made = Appliance.objects.bulk_create(
        [
            Appliance(
                name=f"a{i:02d}",
                device_type=("3310", "3350", "3355")[i % 3],
                hm_ip=f"127.74.{1 + offset}.{10 + (i * 7) % 89}",
                version=("8.0.110.0", "7.6.120.0")[i % 2],
                reachability=("unknown", "reachable", "unreachable")[i % 3],
            )
            for i in range(offset * 100, offset * 100 + n)
        ]
    )
    return made


SORT_KEYS = {
    "name": lambda a: a.name,
    "type": lambda a: (a.device_type, a.name),
    "ip": lambda a: a.hm_ip,
    "version": lambda a: (a.version, a.name),
    "reachability": lambda a: (a.reachability, a.name),
}


@pytest.mark.parametrize("descending", [False, True], ids=["ascending", "descending"])
@pytest.mark.parametrize("sort", list(SORT_KEYS))
def test_the_list_pages_every_row_once_in_order_forwards_and_back(client, operator_user, sort, descending):
    # Given 23 appliances (6 pages of 4), most sortable columns full of ties
    made = appliances(23)
    expected = [a.name for a in sorted(made, key=SORT_KEYS[sort], reverse=descending)]
    client.force_login(operator_user)
    first = f"/mse/?sort={'-' if descending else ''}{sort}"

    # When the operator follows "Next" from the first page to the end, then "Previous" back
    forwards = walk(client, first, "next")
    last_page = client.get(first).content.decode()
    backwards = walk(client, first.split("?")[0] + links(last_page)["last"], "prev")

    # Then every row shows once, in the sort's order, on pages of 4 (the last the remainder),
    # and the way back shows the same pages
    assert [name for page in forwards for name in page] == expected
    assert [len(page) for page in forwards] == [4, 4, 4, 4, 4, 3]
    assert backwards[::-1] == forwards


def test_the_page_numbers_and_the_first_and_last_links(client, operator_user):
    # Given 23 appliances
    appliances(23)
    client.force_login(operator_user)

    # When the operator goes to page 3 by "Next", then to the last page, then back to the first
    third = (
        "/mse/"
        + links(client.get("/mse/" + links(client.get("/mse/").content.decode())["next"]).content.decode())["next"]
    )
    page3 = client.get(third).content.decode()
    last = client.get("/mse/" + links(page3)["last"]).content.decode()
    first = client.get("/mse/" + links(page3)["first"]).content.decode()

    # Then each says where it is, of how many
    assert "9–12 of 23 (page 3 of 6)" in page3
    assert (
        "21–23 of 23 (page 6 of 6)" in last and "next" not in links(last) and ROW.findall(last) == ["a20", "a21", "a22"]
    )
    assert "1–4 of 23 (page 1 of 6)" in first and set(links(first)) == {"next", "last"}


def test_rows_added_while_paging_neither_repeat_nor_push_rows_off(client, operator_user):
    # Given the operator on page 2 of 23 appliances sorted by name
    appliances(23)
    client.force_login(operator_user)
    page2 = client.get("/mse/" + links(client.get("/mse/").content.decode())["next"]).content.decode()
    assert ROW.findall(page2) == ["a04", "a05", "a06", "a07"]

    # When appliances are added before and after where they are, then they click "Next"
    Appliance.objects.bulk_create(
        [
            Appliance(name=name, device_type="3355", hm_ip=ip, version="8.0.110.0")
            for name, ip in (("a00x", "127.74.9.10"), ("a07x", "127.74.9.11"))
        ]
    )
    page3 = client.get("/mse/" + links(page2)["next"]).content.decode()

    # Then the next page starts right after a07: the new a07x, and nothing seen again
    assert ROW.findall(page3) == ["a07x", "a08", "a09", "a10"]


def test_the_overview_pages_every_secondary_once_forwards_and_back(client, make_appliance, operator_user):
    # Given 9 secondaries, each backing a primary, their names among the primaries' in name order
    for n in range(9):
        primary = make_appliance(name=f"m{n}-a", hm_ip=f"127.76.0.{n + 10}", vip=f"127.76.1.{n + 10}", vip_prefixlen=16)
        secondary = make_appliance(name=f"m{n}-b", hm_ip=f"127.76.2.{n + 10}")
        services.ha_pair_create(primary=primary, secondary=secondary)
    client.force_login(operator_user)

    # When the operator pages through the overview and back
    forwards = walk(client, "/ha/", "next")
    backwards = walk(client, "/ha/" + links(client.get("/ha/").content.decode())["last"], "prev")

    # Then each secondary shows once, by name, with its primary
    assert [name for page in forwards for name in page] == [f"m{n}-b" for n in range(9)]
    assert [len(page) for page in forwards] == [4, 4, 1] and backwards[::-1] == forwards
    assert (
        'href="/mse/m4-a/ha/">m4-a</a>'
        in client.get("/ha/" + links(client.get("/ha/").content.decode())["next"]).content.decode()
    )


@pytest.fixture
def pair(make_appliance):
    primary = make_appliance(name="p1", hm_ip="127.77.0.10", vip="127.77.0.11", vip_prefixlen=24)
    secondary = make_appliance(name="s1", hm_ip="127.77.0.12")
    return services.ha_pair_create(primary=primary, secondary=secondary)


def events(pair: HAPair, n: int, *, start: int = 0) -> None:
    """``n`` events, three to each timestamp (ties), their remarks e<index>."""
    now = timezone.now()
    HAEvent.objects.bulk_create(
        [
            HAEvent(
                pair=pair,
                code="heartbeats_setup",
                description="Heartbeats have been setup successfully",
                generated_by="p1",
                timestamp=now - timedelta(seconds=i // 3),
                remarks=f"e{i}",
            )
            for i in range(start, start + n)
        ]
    )


def test_the_events_log_pages_every_event_once_newest_first(client, pair, operator_user):
    # Given 40 events on the pair, three at each second
    events(pair, 40)
    expected = list(HAEvent.objects.filter(pair=pair).order_by("-timestamp", "-id").values_list("remarks", flat=True))
    client.force_login(operator_user)

    # When the operator pages through its Events Log, by "Next" and back by "Previous"
    forwards = walk(client, "/mse/p1/ha/", "next", rows=EVENT)
    backwards = walk(
        client, "/mse/p1/ha/" + links(client.get("/mse/p1/ha/").content.decode())["last"], "prev", rows=EVENT
    )

    # Then each event shows once, newest first (ties by id), on pages of 7
    assert [remarks for page in forwards for remarks in page] == expected
    assert len(forwards) == -(-len(expected) // 7) and backwards[::-1] == forwards


# --- what an operator (or anyone) may type into the address bar -----------------------------
def cursor_of(client, url: str) -> str:
    return links(client.get(url).content.decode())["next"].split("cursor=")[1]


def signed(scope: str, payload) -> str:
    return signing.Signer(salt=f"hapairs.pager:{scope}").sign_object(payload)


def test_edited_or_foreign_page_links_show_the_first_page_and_say_why(client, pair, operator_user):
    # Given a list of 23 appliances and a pair with events, and a real "Next" cursor of each
    appliances(23)
    events(pair, 20)
    client.force_login(operator_user)
    by_name = cursor_of(client, "/mse/")
    of_events = cursor_of(client, "/mse/p1/ha/")
    tampered = ("A" if by_name[0] != "A" else "B") + by_name[1:]
    refused = [
        "/mse/?cursor=garbage",
        f"/mse/?cursor={tampered}",
        f"/mse/?sort=-name&cursor={by_name}",  # another sort's
        f"/mse/?sort=ip&cursor={by_name}",
        f"/mse/?q=a0&cursor={by_name}",  # another filter's
        f"/mse/?sort=ip&cursor={signed('mse_list:ip:' + 'device_type=&paired=&q=&reachability=', [2, 'after', ['999.1.1.1']])}",
        f"/mse/?cursor={signed('mse_list:name:device_type=&paired=&q=&reachability=', [2, 'sideways', ['a03']])}",
        f"/mse/?cursor={signed('mse_list:name:device_type=&paired=&q=&reachability=', ['2', 'after', ['a03']])}",
        f"/mse/?cursor={signed('mse_list:name:device_type=&paired=&q=&reachability=', [2, 'after', ['a03', 'x']])}",
        f"/mse/?cursor={signed('mse_list:name:device_type=&paired=&q=&reachability=', {'page': 2})}",
        f"/mse/s1/ha/?cursor={of_events}",  # another pair's (s1 shows p1's pair: same pair, so see below)
        f"/mse/p1/ha/?cursor={signed(f'ha_status:{pair.pk}', [2, 'after', ['yesterday', '1']])}",
        f"/mse/p1/ha/?cursor={signed(f'ha_status:{pair.pk}', [2, 'after', [timezone.now().isoformat(), 'x']])}",
        f"/mse/p1/ha/?cursor={signed(f'ha_status:{pair.pk}', [2, 'after', [timezone.now().isoformat(), str(2**70)]])}",
        f"/mse/p1/ha/?cursor={by_name}",
        "/ha/?cursor=%00%ff",
    ]

    # When each is asked for
    answers = {url: client.get(url) for url in refused}

    # Then each answers 200 with the first page and the sentence, except the one that is
    # really the same list (s1's status screen is p1's pair)
    for url, response in answers.items():
        body = response.content.decode()
        assert response.status_code == 200, url
        if url.startswith("/mse/s1/"):
            assert NOTICE not in body, url
        else:
            assert NOTICE in body and ("(page 1 of" in body or "1 in all" in body), url  # the overview: one page


@pytest.mark.parametrize(
    "query",
    [
        "page=abc",
        "page=-4",
        "page=0",
        "page=1e3",
        "page=99999999999999999999",
        "page=99999",
        "sort=password_ciphertext",
        "sort=-",
        "sort=--name",
    ],
)
def test_bad_page_numbers_and_sorts_fall_back_without_an_error(client, operator_user, query):
    # Given 23 appliances
    appliances(23)
    client.force_login(operator_user)

    # When the list is asked with a page number or sort that is not one
    response = client.get(f"/mse/?{query}")

    # Then it answers with a page of the list: the first (or, past the end, the last)
    body = response.content.decode()
    assert response.status_code == 200
    past_the_end = query.startswith("page=9999")
    assert ("(page 6 of 6)" if past_the_end else "(page 1 of 6)") in body, body[-2000:]


# --- the cost does not grow with the fleet ----------------------------------------------------
def page_queries(client, url: str, hops: int = 0) -> int:
    """The queries of the page ``hops`` "Next" links after ``url``."""
    path = url.split("?")[0]
    for _ in range(hops):
        url = path + links(client.get(url).content.decode())["next"]
    client.get(url)  # once before: the session is written on a first request
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200, url
    return len(captured)


def fleet(make_appliance, pairs: int, appliances_alone: int, events_of_first: int, tag: int) -> None:
    for n in range(pairs):
        primary = make_appliance(
            name=f"f{tag}p{n:02d}", hm_ip=f"127.78.{tag}.{n + 10}", vip=f"127.78.{tag + 100}.{n + 10}", vip_prefixlen=16
        )
        secondary = make_appliance(name=f"f{tag}s{n:02d}", hm_ip=f"127.78.{tag + 50}.{n + 10}")
        made = services.ha_pair_create(primary=primary, secondary=secondary)
        if n == 0:
            events(made, events_of_first)
    appliances(appliances_alone, offset=tag)


PAGES = [
    ("/mse/", 0),
    ("/mse/?sort=-reachability", 2),
    ("/mse/?sort=type", 3),
    ("/mse/?reachability=unknown", 1),
    ("/ha/", 0),
    ("/ha/", 2),
    ("/mse/f1p00/ha/", 0),
    ("/mse/f1p00/ha/", 2),
]


def test_every_list_needs_the_same_queries_at_two_fleet_sizes(client, make_appliance, operator_user):
    # Given a small fleet (9 pairs, 6 more appliances, 30 events on the first pair)
    fleet(make_appliance, 9, 6, 30, tag=1)
    client.force_login(operator_user)
    small = {(url, hops): page_queries(client, url, hops) for url, hops in PAGES}

    # When it grows five times (36 more pairs, 30 more appliances, 120 more events on that pair)
    fleet(make_appliance, 36, 30, 0, tag=2)
    events(HAPair.objects.get(primary__name="f1p00"), 120, start=1000)
    large = {(url, hops): page_queries(client, url, hops) for url, hops in PAGES}

    # Then every page, the first and the deep ones, needs the same queries
    assert large == small
