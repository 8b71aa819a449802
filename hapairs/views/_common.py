"""What the page views share: role checks, pagination, HTMX partial rendering and polling."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property, wraps
from urllib.parse import quote, urlencode

from django.core import signing
from django.core.exceptions import PermissionDenied
from django.db.models import Model
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django_htmx.http import HTMX_STOP_POLLING

from hapairs import roles, selectors
from hapairs.choices import DeviceType, LinkStatus, Reachability

PAGE_SIZE = 50
# the labels of choices, for rows read as values() (no model instance to ask get_…_display)
DEVICE_TYPES = dict(DeviceType.choices)
REACHABILITY = dict(Reachability.choices)
HEARTBEATS = dict(LinkStatus.choices)


def check_role(request: HttpRequest, permission: str, what: str) -> None:
    """Refuse (403, with a sentence) a user whose role may not do ``what``; the buttons are
    hidden too, but the server is what decides."""
    refusal = roles.refusal(request.user, permission, what)
    if refusal:
        raise PermissionDenied(refusal)


def requires(permission: str, what: str):
    """``check_role`` before the view runs."""

    def decorate(view):
        @wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs):
            check_role(request, permission, what)
            return view(request, *args, **kwargs)

        return wrapped

    return decorate


def url_of_name(url_name: str) -> Callable[[str], str]:
    """``reverse(url_name, kwargs={"name": …})`` for every row of a list: reversed once, each
    name then put in its place, quoted as ``reverse`` quotes a path (a page of 50 rows
    with three links each would otherwise reverse 150 times)."""
    marker = "0name0"
    prefix, _, suffix = reverse(url_name, kwargs={"name": marker}).partition(marker)
    return lambda name: f"{prefix}{quote(name, safe=NAME_SAFE)}{suffix}"


NAME_SAFE = "!$&'()*+,;=~:@"  # RFC 3986 sub-delimiters and what a path segment allows, as reverse()


def posted(request: HttpRequest) -> tuple:
    """A form's data on POST (bound even when empty: an empty POST is invalid, not unseen)."""
    if request.method == "POST":
        return request.POST, request.FILES
    return None, None


def page_number(request: HttpRequest, name: str = "page") -> int:
    try:
        return max(1, min(int(request.GET.get(name, "1")), 100_000))
    except ValueError:
        return 1


class Pager:
    """Offset pagination with links that keep the other query parameters (the short lists;
    the long ones use ``SeekPager``)."""

    notice = ""

    def __init__(self, request: HttpRequest, total: int, *, per_page: int = PAGE_SIZE, name: str = "page"):
        self.name = name
        self.total = total
        self.per_page = per_page
        self.pages = max(1, -(-total // per_page))
        self.number = min(page_number(request, name), self.pages)
        self.offset = (self.number - 1) * per_page
        self._params = {k: v for k, v in request.GET.items() if k != name}

    def url(self, number: int) -> str:
        return "?" + urlencode({**self._params, self.name: number})

    @property
    def first_url(self) -> str | None:
        return self.url(1) if self.number > 2 else None

    @property
    def previous_url(self) -> str | None:
        return self.url(self.number - 1) if self.number > 1 else None

    @property
    def next_url(self) -> str | None:
        return self.url(self.number + 1) if self.number < self.pages else None

    @property
    def last_url(self) -> str | None:
        return self.url(self.pages) if self.number < self.pages - 1 else None

    @property
    def first_index(self) -> int:
        return self.offset + 1 if self.total else 0

    @property
    def last_index(self) -> int:
        return min(self.offset + self.per_page, self.total)


CURSOR = "cursor"
BAD_CURSOR = (
    "That page link does not fit this list (it was edited, or the list's sort or filters changed "
    "since): showing the first page."
)


class SeekPager:
    """Seek (keyset) pagination for the long lists: "Next" carries the sort key of the
    page's last row, "Previous" that of its first, so page 20 starts in the index where
    page 19 ended instead of skipping the 950 rows before it. The key is signed (with the
    list's scope: its sort, filters, or pair), so a link that was edited or belongs to
    another list is refused with a sentence, never a 500. The page number rides along for
    the operator; "Last" reads the list backwards from its end, a page as long as the
    remainder, so its pages line up with those counted from the front. ``total`` is the
    list's length when it is cheap to know (a tally), else None (no "of N", no "Last").
    A page number typed by hand (no cursor) is an offset, as it always was."""

    def __init__(
        self,
        request: HttpRequest,
        *,
        scope: str,
        model: type[Model],
        ordering: Sequence[str],
        total: int | None,
        per_page: int | None = None,
        name: str = "page",
    ):
        per_page = per_page or PAGE_SIZE
        self.name, self.total, self.per_page = name, total, per_page
        self.ordering, self.model = tuple(ordering), model
        self.pages = max(1, -(-total // per_page)) if total is not None else None
        self._params = {k: v for k, v in request.GET.items() if k not in (name, CURSOR)}
        self._signer = signing.Signer(salt=f"hapairs.pager:{scope}")
        self.notice = ""
        self.number = 1
        self.where = selectors.PageWhere(limit=per_page)
        cursor = request.GET.get(CURSOR, "")
        if cursor:
            try:
                number, direction, raw = self._signer.unsign_object(cursor)
                if not isinstance(number, int) or number < 2 or direction not in ("after", "before"):
                    raise ValueError(direction)
                key = selectors.seek_key_parse(model, self.ordering, raw)
            except (signing.BadSignature, ValueError, TypeError):
                self.notice = BAD_CURSOR
            else:
                self.number = number
                self.where = selectors.PageWhere(key=key, backwards=direction == "before", limit=per_page)
            return
        number = page_number(request, name)
        if number > 1 and self.pages is not None and number >= self.pages:
            self.number = self.pages
            self.where = selectors.PageWhere(last=self.total - (self.pages - 1) * per_page, limit=per_page)
        elif number > 1:
            self.number = number
            self.where = selectors.PageWhere(offset=(number - 1) * per_page, limit=per_page)

    def read(self, reader: Callable[[selectors.PageWhere], selectors.Page], key_of: Callable = lambda row: row) -> list:
        """Read the page with ``reader`` (a selector taking a ``PageWhere``) and set the links;
        ``key_of`` gives the model row of a page row (for rows that carry more than it)."""
        page = reader(self.where)
        if page.moved_to == "first" or not page.more_before:
            self.number = 1
        elif self.pages is not None and (page.moved_to == "last" or not page.more_after):
            self.number = self.pages
        elif self.pages is not None:
            self.number = min(self.number, self.pages)
        if page.more_before:
            self.number = max(self.number, 2)
        self.rows = page.rows
        self.has_previous, self.has_next = page.more_before, page.more_after
        self._first_key = selectors.seek_key(key_of(page.rows[0]), self.ordering) if page.rows else None
        self._last_key = selectors.seek_key(key_of(page.rows[-1]), self.ordering) if page.rows else None
        return page.rows

    def _url(self, **extra) -> str:
        return "?" + urlencode({**self._params, **extra})

    def _cursor_url(self, number: int, direction: str, key) -> str:
        return self._url(**{self.name: number, CURSOR: self._signer.sign_object([number, direction, key])})

    @cached_property
    def first_url(self) -> str | None:
        return self._url() if self.has_previous and self.number > 2 else None

    @cached_property
    def previous_url(self) -> str | None:
        if not self.has_previous:
            return None
        if self.number == 2:
            return self._url()
        return self._cursor_url(self.number - 1, "before", self._first_key)

    @cached_property
    def next_url(self) -> str | None:
        return self._cursor_url(self.number + 1, "after", self._last_key) if self.has_next else None

    @cached_property
    def last_url(self) -> str | None:
        if self.pages is None or not self.has_next or self.number >= self.pages - 1:
            return None
        return self._url(**{self.name: self.pages})

    @cached_property
    def first_index(self) -> int:
        if not self.rows:
            return 0
        if self.total is not None and not self.has_next:
            return max(1, self.total - len(self.rows) + 1)
        return (self.number - 1) * self.per_page + 1

    @cached_property
    def last_index(self) -> int:
        return self.first_index + len(self.rows) - 1 if self.rows else 0


def render_page(
    request: HttpRequest, template: str, context: dict, *, partial: str | None = None, status: int = 200
) -> HttpResponse:
    """The whole page, or only ``template#partial`` when HTMX asks for that piece."""
    if partial and request.htmx and not request.htmx.boosted:
        return render(request, f"{template}#{partial}", context, status=status)
    return render(request, template, context, status=status)


def render_polled(
    request: HttpRequest, template: str, context: dict, *, target: str, partial: str, live: bool
) -> HttpResponse:
    """A page with a block that HTMX polls while something moves: the whole page; or, when
    HTMX polls ``target``, only ``template#partial`` — answered 286 (``HTMX_STOP_POLLING``)
    once nothing is ``live``, so htmx stops (the re-rendered block carries no trigger either)."""
    if request.htmx and request.htmx.target == target:
        response = render_page(request, template, context, partial=partial)
        if not live:
            response.status_code = HTMX_STOP_POLLING
        return response
    return render_page(request, template, context)
