"""The API's error answer: raise :class:`ApiError` anywhere under a route; the app answers it as
JSON ``{"message": "..."}`` (``models.ErrorResponse``) with its status."""

from __future__ import annotations


class ApiError(Exception):
    """An error answer: HTTP ``status`` and a ``message`` that says what to do."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


__all__ = ["ApiError"]
