"""Typed errors. Every failure a user can cause has a class here and a sentence that says what to do."""

from __future__ import annotations


class SongbirdError(Exception):
    """Base class of every error raised by whylogs-songbird."""


class ConfigError(SongbirdError, ValueError):
    """A setting is invalid (bad endpoint URL, bad option value, ...)."""


class ProfileError(SongbirdError, ValueError):
    """The thing given to publish is not a usable whylogs profile."""


class RequestLimitError(SongbirdError, ValueError):
    """A request would break the API's limits (references per batch, segment tags, lengths of keys,
    values and aliases: see ``models.py``); it was not sent."""


class DataFileError(SongbirdError, ValueError):
    """A data file to profile is missing, unreadable or malformed, or names an unknown column."""


class EmptyProfileError(ProfileError):
    """The profile holds no data (no columns, or 0 rows): there is nothing to publish."""


class SongbirdConnectionError(SongbirdError, ConnectionError):
    """The server could not be reached, or did not answer in time."""


class LocalServerError(SongbirdConnectionError):
    """The embedded default's local server could not start (another program on its port, the server
    extra missing, ...). Like an unreachable server, it is retryable: the profiles wait in the outbox."""


class SessionBusyError(SongbirdConnectionError):
    """Another process held the stored-session lock too long (it is waiting on a slow server)."""


class SongbirdProtocolError(SongbirdError):
    """The server answered 2xx, but not with what the contract promises (malformed JSON, wrong shape)."""


class SongbirdApiError(SongbirdError):
    """The server answered with a non-2xx status.

    Attributes: ``status`` (HTTP status), ``operation`` (the API operation's name) and
    ``server_message`` (the ``message`` the server sent, or a short excerpt of its body).
    """

    def __init__(self, message: str, *, status: int, operation: str, server_message: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.operation = operation
        self.server_message = server_message


class SessionNotFoundError(SongbirdApiError):
    """The session is unknown, expired or claimed: start a new one."""


class AuthError(SongbirdApiError):
    """401/403: the API key is missing or wrong, or an upload URL's signature was refused."""


class PublishError(SongbirdError):
    """Some or all profiles of a publish did not land. ``result`` says which did."""

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result


def is_retryable(exc: BaseException) -> bool:
    """Would sending again later help? Yes for an unreachable or failing server, no for a refused profile."""
    if isinstance(exc, SongbirdConnectionError):
        return True
    if isinstance(exc, SongbirdApiError) and not isinstance(exc, AuthError):
        return exc.status >= 500 or exc.status in (408, 429)
    return False
