"""The one error the node's parts raise to answer an API request with an HTTP status."""

from __future__ import annotations


class ApiError(Exception):
    """Refuse a request: the server answers ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
