"""What the page views share: role checks, pagination, HTMX partial rendering and polling."""

from __future__ import annotations

from functools import wraps
from urllib.parse import urlencode

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django_htmx.http import HTMX_STOP_POLLING

from hapairs import roles

PAGE_SIZE = 50


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
    """Offset pagination with links that keep the other query parameters."""

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
    def previous_url(self) -> str | None:
        return self.url(self.number - 1) if self.number > 1 else None

    @property
    def next_url(self) -> str | None:
        return self.url(self.number + 1) if self.number < self.pages else None

    @property
    def first_index(self) -> int:
        return self.offset + 1 if self.total else 0

    @property
    def last_index(self) -> int:
        return min(self.offset + self.per_page, self.total)


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
