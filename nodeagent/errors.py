"""The errors the node's parts raise: to answer an API request, or to end a command."""

from __future__ import annotations


class ApiError(Exception):
    """Refuse a request: the server answers ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


EXIT_USAGE = 2
EXIT_FAIL = 1


class CliError(Exception):
    """A command cannot go on: one line on stderr, exit 1, never a traceback."""
