"""Seek (keyset) pages of any queryset: the machinery the long lists share (selectors.lists).

A page starts after the sort key of the row that ended the one before, found in an index
matching the ordering, so page 20 costs what page 1 costs; OFFSET would read and skip the
950 rows before it. The keys travel in page links as strings (``seek_key``) and are read
back field by field (``seek_key_parse``), so nothing the browser sends reaches SQL unchecked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import connections
from django.db.models import CharField, F, Model, QuerySet
from django.db.models.fields.tuple_lookups import Tuple, TupleGreaterThan, TupleLessThan


@dataclass(frozen=True)
class PageWhere:
    """Which page to read: the first (the default); the one just after the row whose sort
    key is ``key`` (or, ``backwards``, just before it); ``offset`` rows in (a page number
    typed by hand); or the last ``last`` rows."""

    key: tuple | None = None
    backwards: bool = False
    offset: int = 0
    last: int = 0
    limit: int = 50


@dataclass(frozen=True)
class Page:
    rows: list
    more_before: bool  # rows come before the first one shown
    more_after: bool  # rows come after the last one shown
    moved_to: str = ""  # "first" / "last": the asked position had gone, this page was read instead


def seek_fields(ordering: Sequence[str]) -> list[str]:
    """The field names of an ordering of one direction: ("-timestamp", "-id") → timestamp, id."""
    fields = [name.lstrip("-") for name in ordering]
    if len({name.startswith("-") for name in ordering}) != 1:
        raise ValueError(f"a seek ordering sorts every field one way: {ordering}")
    return fields


def seek_key(row: Model | dict, ordering: Sequence[str]) -> list[str]:
    """A row's sort key (a model row, or a ``values()`` row holding the fields) as strings, for
    a page link; ``seek_key_parse`` reads them back."""
    values = [row[name] if isinstance(row, dict) else getattr(row, name) for name in seek_fields(ordering)]
    return [value.isoformat() if isinstance(value, datetime) else str(value) for value in values]


def seek_key_parse(model: type[Model], ordering: Sequence[str], raw) -> tuple:
    """The sort key a page link carries, checked by each field (ValueError when it is not one)."""
    fields = seek_fields(ordering)
    if not isinstance(raw, list) or len(raw) != len(fields) or not all(isinstance(v, str) for v in raw):
        raise ValueError("not a sort key of this list")
    values = []
    for name, text in zip(fields, raw, strict=True):
        field = model._meta.get_field(name)
        try:
            value = field.to_python(text)
            if not isinstance(field, CharField):  # a number's range, an address's form: what the database checks
                field.run_validators(value)
        except ValidationError as exc:
            raise ValueError(f"{name}: {exc.messages[0]}") from None
        if value is None:
            raise ValueError(f"{name}: empty")
        values.append(value)
    return tuple(values)


def seek_page(queryset: QuerySet, ordering: Sequence[str], where: PageWhere) -> Page:
    """One page of ``queryset`` in ``ordering`` (one direction; its last field unique, so
    the key is total), read from an index matching it: one query, and one more only when
    the asked position has gone (rows deleted meanwhile). A row past the page is fetched
    to know whether another follows."""
    fields = seek_fields(ordering)
    descending = ordering[0].startswith("-")
    backwards_ordering = [name[1:] if descending else f"-{name}" for name in ordering]
    limit = where.limit

    def read(forward: bool, key: tuple | None, count: int, offset: int = 0) -> list:
        rows = queryset.order_by(*(ordering if forward else backwards_ordering))
        if key is not None:
            beyond = TupleGreaterThan if forward != descending else TupleLessThan
            rows = rows.filter(beyond(Tuple(*(F(name) for name in fields)), key))
            if not connections[queryset.db].features.supports_tuple_lookups:
                # SQLite gets the comparison spelt out (a < x OR a = x AND b < y), which its
                # planner cannot seek by: the first field's bound too, so it seeks the index
                rows = rows.filter(**{f"{fields[0]}__{'gte' if beyond is TupleGreaterThan else 'lte'}": key[0]})
        return list(rows[offset : offset + count + 1])

    if where.last:
        rows = read(False, None, where.last)
        return Page(rows[: where.last][::-1], more_before=len(rows) > where.last, more_after=False)
    if where.key is not None and where.backwards:
        rows = read(False, where.key, limit)
        if len(rows) > limit:
            return Page(rows[:limit][::-1], more_before=True, more_after=True)
        if len(rows) == limit:  # exactly a page before it: the first page
            return Page(rows[::-1], more_before=False, more_after=True, moved_to="first")
        first = read(True, None, limit)  # fewer (rows went since): the first page, read again
        return Page(first[:limit], more_before=False, more_after=len(first) > limit, moved_to="first")
    rows = read(True, where.key, limit, where.offset)
    if not rows and (where.key is not None or where.offset):
        rows = read(False, None, limit)  # nothing after it any more: the last page
        return Page(rows[:limit][::-1], more_before=len(rows) > limit, more_after=False, moved_to="last")
    return Page(rows[:limit], more_before=where.key is not None or where.offset > 0, more_after=len(rows) > limit)
