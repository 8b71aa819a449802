"""What the page views share: role checks, pagination, HTMX partial rendering."""

from __future__ import annotations

from functools import wraps
from urllib.parse import urlencode

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from hapairs import roles

PAGE_SIZE = 50


def requires(permission: str, what: str):
    """Refuse (403, with a sentence) a user whose role may not do ``what``; the buttons are
    hidden too, but the server is what decides."""

    def decorate(view):
        @wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs):
            if not request.user.has_perm(permission):
                role = roles.role_of(request.user) or "no role"
                raise PermissionDenied(f"Your role ({role}) may not {what}.")
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


def render_page(request: HttpRequest, template: str, context: dict, *, partial: str | None = None,
                status: int = 200) -> HttpResponse:
    """The whole page, or only ``template#partial`` when HTMX asks for that piece."""
    if partial and request.htmx and not request.htmx.boosted:
        return render(request, f"{template}#{partial}", context, status=status)
    return render(request, template, context, status=status)
