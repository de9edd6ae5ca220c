"""The ``songbird`` command: demo, profile, upload, session, outbox and serve.

Exit codes: 0 success; 1 a failed upload, an unreachable or failing server; 2 a usage error (a bad
option, an input file that is missing, unreadable or malformed, a bad ``--timestamp``, an unknown
``--segment-by`` column, a bad setting). Errors are one line on stderr starting with ``error:``;
``--verbose`` adds the traceback and the library's debug log. Links go to stdout, progress and
messages to stderr, so ``songbird profile data.csv > links.txt`` keeps only the links.

Every input is checked before the first network call, so a command that fails on its input has
neither created a session nor uploaded anything.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from typer.core import TyperGroup

from whylogs_songbird import session as sessions
from whylogs_songbird.client import validate_endpoint
from whylogs_songbird.config import APP_NAME, Settings, resolve_settings
from whylogs_songbird.errors import (
    ConfigError,
    ProfileError,
    PublishError,
    SongbirdError,
)
from whylogs_songbird.profiles import ProfileItem, check_alias, items_from, read_profile_file, to_millis
from whylogs_songbird.publish import Publisher, PublishResult

try:  # typer >= 0.2x carries its own copy of click
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - older typer on click
    from click.exceptions import NoArgsIsHelpError, UsageError  # type: ignore[assignment]

if TYPE_CHECKING:
    import pandas as pd

    from whylogs_songbird.demo import DemoReport

#: Exit codes.
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageProblem(SongbirdError, ValueError):
    """Bad input found by the CLI itself (a file it cannot read, an unknown column, ...): exit code 2."""


# -- the command group: usage errors as one line ----------------------------------------------


class _Group(TyperGroup):
    """Typer's group, with click's usage errors reported as one ``error:`` line (exit code 2)."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = code if isinstance(code, int) else EXIT_OK
        except NoArgsIsHelpError as exc:
            typer.echo(exc.format_message())
            code = EXIT_OK
        except UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            typer.echo(f"error: {_one_line(exc.format_message())}{hint}", err=True)
            code = exc.exit_code
        except typer.Abort:
            typer.echo("error: aborted.", err=True)
            code = EXIT_FAILED
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    cls=_Group,
    name="songbird",
    help="Publish whylogs profiles to songbird (WhyLabs guest sessions), or to a local songbird server.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
session_app = typer.Typer(
    help="Inspect and manage the stored guest session of an endpoint.",
    no_args_is_help=True,
)
app.add_typer(session_app, name="session")
outbox_app = typer.Typer(
    help="Profiles whose upload failed on an unreachable or failing server wait in the outbox: list or deliver them.",
    no_args_is_help=True,
)
app.add_typer(outbox_app, name="outbox")


def _version(value: bool) -> None:
    if value:
        from whylogs_songbird import __version__

        typer.echo(f"songbird (whylogs-songbird) {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Publish whylogs profiles to songbird (WhyLabs guest sessions), or to a local songbird server."""


# -- shared options ---------------------------------------------------------------------------

_CONNECTION = "Connection"
Endpoint = Annotated[
    str | None,
    typer.Option(
        "--endpoint",
        metavar="URL",
        help="songbird API base URL. Default: $SONGBIRD_API_ENDPOINT, then the config file, "
        "then https://api.whylabsapp.com.",
        rich_help_panel=_CONNECTION,
        show_default=False,
    ),
]
ConfigDir = Annotated[
    Path | None,
    typer.Option(
        "--config-dir",
        metavar="DIR",
        help="Where config.json and the stored sessions live. Default: $SONGBIRD_CONFIG_DIR, then the user config dir.",
        rich_help_panel=_CONNECTION,
        show_default=False,
    ),
]
Timeout = Annotated[
    float | None,
    typer.Option("--timeout", metavar="SECONDS", help="Read timeout of each request.", rich_help_panel=_CONNECTION),
]
MaxRetries = Annotated[
    int | None,
    typer.Option(
        "--max-retries",
        metavar="N",
        help="Retries of connection errors, 429 and 5xx (0 disables).",
        rich_help_panel=_CONNECTION,
    ),
]
Verbose = Annotated[
    bool, typer.Option("--verbose", "-v", help="Show tracebacks and the library's debug log.", show_default=False)
]


def _options(endpoint: str | None, config_dir: Path | None, timeout: float | None, max_retries: int | None) -> dict:
    return {"endpoint": endpoint, "config_dir": config_dir, "timeout": timeout, "max_retries": max_retries}


# -- output, logging and errors ---------------------------------------------------------------


def _stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class _WarningsOnly(logging.Filter):
    """Without --verbose: the library's warnings (e.g. a renewed session), not its errors (we report those).

    The publisher's and the outbox's own warnings are left out too: the ``error:`` line already
    says what failed and whether it was kept in the outbox.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno == logging.WARNING and record.name not in _REPORTED_BY_THE_CLI


_REPORTED_BY_THE_CLI = frozenset({"whylogs_songbird.publish", "whylogs_songbird.outbox"})


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"warning: {_one_line(record.getMessage())}"


@contextlib.contextmanager
def _library_log(verbose: bool) -> Iterator[None]:
    """Send the library's log to stderr while a command runs: warnings as one line, or everything with --verbose."""
    package = logging.getLogger("whylogs_songbird")
    saved_level, saved_propagate = package.level, package.propagate
    handler = logging.StreamHandler(sys.stderr)
    if verbose:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        package.setLevel(logging.DEBUG)
    else:
        handler.setFormatter(_OneLine())
        handler.addFilter(_WarningsOnly())
        package.setLevel(logging.WARNING)
    package.addHandler(handler)
    package.propagate = False
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(saved_level)
        package.propagate = saved_propagate


def _fail(message: str, code: int, verbose: bool = False, exc: BaseException | None = None) -> NoReturn:
    if verbose and exc is not None:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    typer.echo(f"error: {_one_line(message)}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def _reported(verbose: bool, *, library_log: bool = True) -> Iterator[None]:
    """Turn the library's exceptions into one ``error:`` line and the documented exit code.

    With ``library_log``, the library's log goes to stderr meanwhile (see `_library_log`).
    """
    with _library_log(verbose) if library_log else contextlib.nullcontext():
        try:
            yield
        except typer.Exit:
            raise
        except (ConfigError, ProfileError, UsageProblem) as exc:
            _fail(str(exc), EXIT_USAGE, verbose, exc)
        except PublishError as exc:
            if isinstance(exc.result, PublishResult) and verbose:
                for failed in exc.result.failed:
                    typer.echo(f"  failed: {failed.label}: {failed.error}", err=True)
            _fail(str(exc), EXIT_FAILED, verbose, exc)
        except SongbirdError as exc:
            _fail(str(exc), EXIT_FAILED, verbose, exc)
        except KeyboardInterrupt:
            typer.echo("interrupted.", err=True)
            raise typer.Exit(130) from None
        except Exception as exc:
            hint = "" if verbose else " (run with --verbose for the traceback)"
            _fail(f"unexpected {type(exc).__name__}: {exc}{hint}", EXIT_FAILED, verbose, exc)


def _progress(console: Console) -> Progress:
    """Progress bars on a terminal (gone when done: a summary line follows); nothing when stderr is not a terminal."""
    return Progress(
        SpinnerColumn(finished_text="✓"),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


def _publish_with_progress(settings: Settings, items: Sequence[ProfileItem], progress: Progress) -> PublishResult:
    task = progress.add_task("Uploading", total=len(items))
    with Publisher(settings, on_profile=lambda _: progress.advance(task)) as publisher:
        return publisher.publish(items)


def _finish(result: PublishResult, what: str = "") -> None:
    """Print the links of what landed (stdout): one per profile, then the combined ones (up to 3 profiles each).

    Then a summary line on stderr, or `PublishError` (exit code 1) if any profile failed.
    """
    for profile in result.landed:
        typer.echo(f"{profile.kind:<9} {profile.label:<32} {profile.observatory_url or '(no link)'}")
    singles = {p.observatory_url for p in result.landed}
    for url in result.observatory_urls:
        if url not in singles:
            typer.echo(f"{'together':<9} {'':<32} {url}")
    if not result.ok:
        raise PublishError(result.summary(), result)
    _stderr().print(
        f"published {len(result.profiles)} profile{'s' if len(result.profiles) != 1 else ''}{what} "
        f"to {result.endpoint} in session {result.session_id}"
    )


@contextlib.contextmanager
def _status(console: Console, text: str) -> Iterator[None]:
    """A spinner on a terminal, nothing otherwise."""
    if console.is_terminal:
        with console.status(text):
            yield
    else:
        yield


# -- input ------------------------------------------------------------------------------------

#: File formats `songbird profile` reads, by file extension.
FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
_COMPRESSION = {".gz", ".bz2", ".zip", ".xz", ".zst"}


def parse_timestamp(text: str) -> int:
    """Epoch milliseconds from ISO 8601 (``2024-05-01``, ``2024-05-01T12:00:00Z``, ...) or epoch ms."""
    value = text.strip()
    if re.fullmatch(r"[+-]?\d+", value):
        return to_millis(int(value), what="--timestamp")
    iso = value[:-1] + "+00:00" if value[-1:] in ("Z", "z") else value
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        raise UsageProblem(
            f"--timestamp {text!r} is neither ISO 8601 (e.g. 2024-05-01 or 2024-05-01T12:00:00Z; "
            "UTC unless it has an offset) nor epoch milliseconds (e.g. 1714521600000)."
        ) from None
    return to_millis(moment, what="--timestamp")


def detect_format(path: Path, given: str | None = None) -> str:
    """The format of ``path``: ``given``, or from its extension (a compression suffix is skipped)."""
    if given:
        return given
    suffixes = [s.lower() for s in path.suffixes]
    while suffixes and suffixes[-1] in _COMPRESSION:
        suffixes.pop()
    fmt = FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise UsageProblem(
            f"{path}: cannot tell its format from the name; use a .csv, .tsv, .parquet or .jsonl file, "
            "or pass --format."
        )
    return fmt


def _check_readable_file(path: Path, what: str) -> None:
    if not path.exists():
        raise UsageProblem(f"{path}: no such file.")
    if path.is_dir():
        raise UsageProblem(f"{path} is a directory, not {what}.")
    if not os.access(path, os.R_OK):
        raise UsageProblem(f"{path}: cannot read it (permission denied).")


def _require_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise SongbirdError(f"reading Parquet needs a working pyarrow (pip install pyarrow): {exc}") from None


def read_table(path: Path, fmt: str) -> pd.DataFrame:
    """Read a data file into a DataFrame, or raise `UsageProblem` saying what is wrong with it."""
    import pandas as pd

    _check_readable_file(path, "a data file")
    try:
        if fmt == "csv":
            frame = pd.read_csv(path)
        elif fmt == "tsv":
            frame = pd.read_csv(path, sep="\t")
        elif fmt == "parquet":
            _require_pyarrow()
            frame = pd.read_parquet(path)
        elif fmt == "jsonl":
            frame = pd.read_json(path, lines=True)
        else:
            raise UsageProblem(f"unknown format {fmt!r}: use csv, tsv, parquet or jsonl.")
    except SongbirdError:
        raise
    except UnicodeDecodeError as exc:
        raise UsageProblem(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}).") from None
    except pd.errors.EmptyDataError:
        raise UsageProblem(f"{path} is empty: there is no header and no data to profile.") from None
    except OSError as exc:
        raise UsageProblem(f"{path}: cannot read it ({exc.strerror or exc}).") from None
    except Exception as exc:  # pandas and pyarrow raise many kinds on malformed input
        detail = _one_line(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise UsageProblem(f"{path} is not a readable {fmt} file: {detail}") from None
    if len(frame.columns) == 0 or len(frame) == 0:
        raise UsageProblem(f"{path} has no rows to profile.")
    return frame


def _segment_schema(frame: pd.DataFrame, columns: Sequence[str]) -> Any:
    """A whylogs schema that segments on ``columns`` (together), after checking they exist."""
    from whylogs.core.schema import DatasetSchema
    from whylogs.core.segmentation_partition import ColumnMapperFunction, SegmentationPartition

    names = [str(c) for c in frame.columns]
    unknown = [c for c in columns if c not in names]
    if unknown:
        shown = ", ".join(names[:30]) + (", ..." if len(names) > 30 else "")
        raise UsageProblem(f"unknown --segment-by column {', '.join(map(repr, unknown))}; the columns are: {shown}.")
    if len(set(columns)) != len(columns):
        raise UsageProblem("a --segment-by column is given twice.")
    name = ",".join(columns)
    partition = SegmentationPartition(name=name, mapper=ColumnMapperFunction(col_names=list(columns)))
    return DatasetSchema(segments={name: partition})


# -- songbird profile -------------------------------------------------------------------------


@app.command("profile")
def profile_command(
    data: Annotated[
        Path, typer.Argument(metavar="DATA", help="A CSV, TSV, Parquet or JSON-lines file.", show_default=False)
    ],
    reference: Annotated[
        str | None,
        typer.Option("--reference", "-r", metavar="NAME", help="Publish as a reference profile with this name."),
    ] = None,
    segment_by: Annotated[
        list[str] | None,
        typer.Option("--segment-by", "-s", metavar="COLUMN", help="Segment on this column (repeat for several)."),
    ] = None,
    timestamp: Annotated[
        str | None,
        typer.Option(
            "--timestamp",
            "-t",
            metavar="WHEN",
            help="Dataset timestamp: ISO 8601 (UTC unless an offset is given) or epoch milliseconds. Default: now.",
        ),
    ] = None,
    file_format: Annotated[
        str | None,
        typer.Option("--format", metavar="FORMAT", help="csv, tsv, parquet or jsonl (default: from the extension)."),
    ] = None,
    endpoint: Endpoint = None,
    config_dir: ConfigDir = None,
    timeout: Timeout = None,
    max_retries: MaxRetries = None,
    verbose: Verbose = False,
) -> None:
    """Profile a data file with whylogs and publish the profile; prints its observatory link(s)."""
    with _reported(verbose):
        settings = resolve_settings(_options(endpoint, config_dir, timeout, max_retries))
        stamp = parse_timestamp(timestamp) if timestamp is not None else None
        name = check_alias(reference) if reference is not None else None
        if file_format is not None and file_format not in set(FORMATS.values()):
            raise UsageProblem(f"--format {file_format!r} is not one of csv, tsv, parquet, jsonl.")
        fmt = detect_format(data, file_format)
        console = _stderr()
        with _status(console, f"Reading {data}"):
            frame = read_table(data, fmt)
            schema = _segment_schema(frame, segment_by) if segment_by else None
        with _status(console, f"Profiling {len(frame)} rows"):
            import whylogs as why

            results = why.log(frame, schema=schema) if schema is not None else why.log(frame)
            items = items_from(results, dataset_timestamp=stamp, reference_profile_name=name)
        with _progress(console) as progress:
            result = _publish_with_progress(settings, items, progress)
        _finish(result, f" ({len(frame)} rows, {len(frame.columns)} columns of {data.name})")


# -- songbird upload --------------------------------------------------------------------------


@app.command("upload")
def upload_command(
    files: Annotated[
        list[Path], typer.Argument(metavar="PROFILE", help="Serialized whylogs profiles (.bin).", show_default=False)
    ],
    reference: Annotated[
        list[str] | None,
        typer.Option(
            "--reference",
            "-r",
            metavar="NAME",
            help="Publish as references: one name per file, in order. Without it, batch profiles.",
        ),
    ] = None,
    timestamp: Annotated[
        str | None,
        typer.Option(
            "--timestamp",
            "-t",
            metavar="WHEN",
            help="Override each profile's dataset timestamp: ISO 8601 or epoch milliseconds.",
        ),
    ] = None,
    endpoint: Endpoint = None,
    config_dir: ConfigDir = None,
    timeout: Timeout = None,
    max_retries: MaxRetries = None,
    verbose: Verbose = False,
) -> None:
    """Publish profiles already serialized by whylogs; several references go up in one batch call."""
    with _reported(verbose):
        settings = resolve_settings(_options(endpoint, config_dir, timeout, max_retries))
        stamp = parse_timestamp(timestamp) if timestamp is not None else None
        names = list(reference or [])
        if names and len(names) != len(files):
            raise UsageProblem(
                f"got {len(files)} profile file(s) but {len(names)} --reference name(s): "
                "give one name per file (in the same order), or none for batch profiles."
            )
        for name in names:
            check_alias(name)
        if len(set(names)) != len(names):
            raise UsageProblem("a --reference name is given twice: reference names must be unique.")
        for path in files:
            _check_readable_file(path, "a profile file")
        console = _stderr()
        items: list[ProfileItem] = []
        with _progress(console) as progress:
            task = progress.add_task("Reading profiles", total=len(files))
            for index, path in enumerate(files):
                view = read_profile_file(path)
                alias = names[index] if names else None
                items.extend(items_from(view, dataset_timestamp=stamp, reference_profile_name=alias))
                progress.advance(task)
        with _progress(console) as progress:
            result = _publish_with_progress(settings, items, progress)
        _finish(result)


# -- songbird session -------------------------------------------------------------------------


@session_app.command("show")
def session_show(
    endpoint: Endpoint = None,
    config_dir: ConfigDir = None,
    verbose: Verbose = False,
) -> None:
    """Show the session the next publish to the endpoint will use (no network call)."""
    with _reported(verbose):
        settings = resolve_settings({"endpoint": endpoint, "config_dir": config_dir})
        session_id = sessions.current_session(endpoint=settings.endpoint, config_dir=settings.config_dir)
        typer.echo(f"endpoint:   {settings.endpoint}")
        typer.echo(f"config dir: {settings.config_dir}")
        if session_id is None:
            typer.echo("session:    none stored; the next publish starts a new guest session")
        elif settings.session_id:
            typer.echo(f"session:    {session_id} (from SONGBIRD_SESSION_ID or the config file)")
        else:
            typer.echo(f"session:    {session_id} (stored in {settings.config_dir / sessions.STATE_FILE})")


@session_app.command("new")
def session_new(
    endpoint: Endpoint = None,
    config_dir: ConfigDir = None,
    timeout: Timeout = None,
    max_retries: MaxRetries = None,
    verbose: Verbose = False,
) -> None:
    """Start a new guest session now and store it, replacing the stored one."""
    with _reported(verbose):
        options = _options(endpoint, config_dir, timeout, max_retries)
        settings = resolve_settings(options)
        session_id = sessions.new_session(**options)
        typer.echo(session_id)
        _stderr().print(f"new guest session at {settings.endpoint}; the next publishes go into it")


@session_app.command("forget")
def session_forget(
    endpoint: Endpoint = None,
    config_dir: ConfigDir = None,
    verbose: Verbose = False,
) -> None:
    """Forget the stored session (the server keeps it); the next publish starts a new one."""
    with _reported(verbose):
        settings = resolve_settings({"endpoint": endpoint, "config_dir": config_dir})
        forgotten = sessions.forget_session(endpoint=settings.endpoint, config_dir=settings.config_dir)
        if forgotten:
            typer.echo(f"forgot session {forgotten} of {settings.endpoint}")
        else:
            typer.echo(f"no session was stored for {settings.endpoint}")


@session_app.command("claim")
def session_claim(
    org_id: Annotated[
        str | None,
        typer.Option("--org-id", metavar="ORG", help="The organization to claim into. Default: $SONGBIRD_ORG_ID."),
    ] = None,
    endpoint: Endpoint = None,
    config_dir: ConfigDir = None,
    timeout: Timeout = None,
    max_retries: MaxRetries = None,
    verbose: Verbose = False,
) -> None:
    """Claim the stored guest session into an organization (API key from $SONGBIRD_API_KEY or a prompt)."""
    with _reported(verbose):
        options = {**_options(endpoint, config_dir, timeout, max_retries), "org_id": org_id}
        settings = resolve_settings(options)
        if not settings.org_id:
            raise UsageProblem("session claim needs --org-id ORG (or SONGBIRD_ORG_ID): the organization to claim into.")
        session_id = sessions.current_session(**options)
        if not session_id:
            raise UsageProblem(f"there is no stored guest session for {settings.endpoint}: nothing to claim.")
        api_key = settings.api_key
        if not api_key:
            try:
                api_key = typer.prompt(f"API key of organization {settings.org_id}", hide_input=True, err=True)
            except typer.Abort:
                typer.echo("", err=True)
                raise UsageProblem(
                    "session claim needs an API key: set SONGBIRD_API_KEY or type it at the prompt."
                ) from None
            if not api_key or not api_key.strip():
                raise UsageProblem("session claim needs an API key: set SONGBIRD_API_KEY or type it at the prompt.")
        claimed = sessions.claim_session(api_key=api_key.strip(), **options)
        typer.echo(f"claimed session {claimed} into organization {settings.org_id}")
        _stderr().print("the session is now expired; the next publish starts a new guest session")


# -- songbird outbox --------------------------------------------------------------------------


@outbox_app.command("list")
def outbox_list(
    endpoint: Annotated[
        str | None,
        typer.Option("--endpoint", metavar="URL", help="Only the profiles waiting for this endpoint."),
    ] = None,
    config_dir: ConfigDir = None,
    verbose: Verbose = False,
) -> None:
    """List the profiles waiting in the outbox (no network call)."""
    with _reported(verbose):
        from whylogs_songbird.outbox import Outbox

        settings = resolve_settings({"config_dir": config_dir})
        wanted = validate_endpoint(endpoint) if endpoint is not None else None
        outbox = Outbox(settings.outbox_path)
        entries = outbox.entries(wanted)
        for entry in entries:
            stamp = datetime.fromtimestamp(entry.dataset_timestamp / 1000, tz=timezone.utc)
            typer.echo(
                f"{entry.id}  {entry.kind:<9} {entry.label:<28} {stamp:%Y-%m-%d %H:%M}Z  {entry.size:>9} B  "
                f"{entry.endpoint}"
            )
        _stderr().print(f"{len(entries)} profile{'s' if len(entries) != 1 else ''} waiting in {outbox.directory}")


@outbox_app.command("flush")
def outbox_flush(
    endpoint: Annotated[
        str | None,
        typer.Option("--endpoint", metavar="URL", help="Only deliver the profiles meant for this endpoint."),
    ] = None,
    config_dir: ConfigDir = None,
    timeout: Timeout = None,
    max_retries: MaxRetries = None,
    verbose: Verbose = False,
) -> None:
    """Deliver the profiles waiting in the outbox, each to the endpoint it was meant for; safe to rerun."""
    with _reported(verbose):
        from whylogs_songbird.outbox import Outbox

        settings = resolve_settings({"config_dir": config_dir, "timeout": timeout, "max_retries": max_retries})
        wanted = validate_endpoint(endpoint) if endpoint is not None else None
        outbox = Outbox(settings.outbox_path)
        with _status(_stderr(), f"Delivering {len(outbox.entries(wanted))} profiles"):
            report = outbox.flush(settings, endpoint=wanted)
        for entry in report.delivered:
            typer.echo(f"{entry.kind:<9} {entry.label:<32} {entry.observatory_url or '(no link)'}")
        if report.failed:
            first, reason = report.failed[0]
            raise SongbirdError(
                f"{len(report.failed)} profile(s) are still waiting in the outbox ({first.label}: {reason}); "
                "run `songbird outbox flush` again later."
            )
        _stderr().print(f"delivered {len(report.delivered)} profile{'s' if len(report.delivered) != 1 else ''}")


# -- songbird serve ---------------------------------------------------------------------------


def default_server_data_dir() -> Path:
    """Where ``songbird serve`` keeps its data unless told: ``<user data dir>/server``."""
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME)) / "server"


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SongbirdError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port or --host."
            ) from None


@app.command("serve")
def serve_command(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", min=0, max=65535, help="Port to listen on.")] = 8787,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            metavar="DIR",
            help="Where sessions and profiles are kept. Default: <user data dir>/whylogs-songbird/server.",
            show_default=False,
        ),
    ] = None,
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            "--api-key",
            metavar="KEY",
            help="An API key accepted for get_session and claim, '<id>.<secret>[:<org-id>]' (repeatable). "
            "Default: $SONGBIRD_SERVER_API_KEYS.",
        ),
    ] = None,
    url_ttl: Annotated[
        int, typer.Option("--url-ttl", metavar="SECONDS", min=1, help="How long upload URLs stay valid.")
    ] = 900,
    latency_ms: Annotated[
        int,
        typer.Option("--latency-ms", metavar="MS", min=0, help="Delay every API request (emulates a network)."),
    ] = 0,
    fault_rate: Annotated[
        float,
        typer.Option(
            "--fault-rate",
            metavar="RATE",
            min=0.0,
            max=1.0,
            help="Answer this fraction of API requests with 500, 503, 429 or a dropped connection (for testing).",
        ),
    ] = 0.0,
    fault_seed: Annotated[
        int | None, typer.Option("--fault-seed", metavar="N", help="Seed of --fault-rate, for reproducible faults.")
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Run the local songbird-compatible server and observatory in the foreground (Ctrl-C stops it)."""
    with _reported(verbose, library_log=False):
        try:
            from whylogs_songbird.server import ServerConfig, run_server
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise UsageProblem(
                f"the local server needs the 'server' extra ({exc.name} is missing): "
                "pip install 'whylogs-songbird[server]'."
            ) from None
        directory = (data_dir or default_server_data_dir()).expanduser()
        try:
            config = ServerConfig(
                host=host,
                port=port,
                data_dir=directory,
                api_keys=list(api_key or []),
                url_ttl_seconds=url_ttl,
                latency_ms=latency_ms,
                fault_rate=fault_rate,
                fault_seed=fault_seed,
            )
        except ValueError as exc:
            raise UsageProblem(str(exc)) from None
        _check_port_free(host, port)
        directory.mkdir(parents=True, exist_ok=True)
        logging.basicConfig(
            stream=sys.stderr,
            level=logging.DEBUG if verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        shown_host = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 - only for display
        url = f"http://{shown_host}:{port}"
        console = _stderr()
        console.print(f"songbird local server on {url} (data in {directory}); Ctrl-C stops it.")
        console.print(f"Publish to it with: export SONGBIRD_API_ENDPOINT={url}")
        if host not in ("127.0.0.1", "localhost", "::1"):
            console.print(
                f"warning: listening on {host}: anyone who can reach this address can create sessions and upload."
            )
        with contextlib.suppress(KeyboardInterrupt):
            run_server(config)
        console.print("songbird local server stopped.")


# -- songbird demo ----------------------------------------------------------------------------


def _print_demo(report: DemoReport, session_page: str | None = None) -> None:
    data = report.data
    worst = data.most_drifted
    typer.echo(f"Observatory links (session {report.session_id}):")
    typer.echo("")
    typer.echo(f"  reference {data.reference_name!r} ({len(data.reference):,} rows)")
    typer.echo(f"    {report.reference.observatory_url}")
    typer.echo("")
    typer.echo("  daily batches (drift score vs the reference: the largest KS / total-variation distance of a column)")
    for batch in data.batches:
        link = batch.published.observatory_url if batch.published else None
        mark = "  <- most drifted" if batch is worst else ""
        typer.echo(f"    {batch.day:%Y-%m-%d}  drift {batch.score:.2f} ({batch.most_drifted_column}){mark}")
        typer.echo(f"      {link}")
    typer.echo("")
    typer.echo(f"  compare {data.reference_name!r} with the most drifted batch ({worst.day:%Y-%m-%d}):")
    typer.echo(f"    {report.comparison_url}")
    if session_page:
        typer.echo("")
        typer.echo("  every profile of the session (a page of the local observatory):")
        typer.echo(f"    {session_page}")


@app.command("demo")
def demo_command(
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Exit after printing the links instead of serving until Ctrl-C.")
    ] = False,
    days: Annotated[int, typer.Option("--days", min=2, max=90, help="How many daily batches to publish.")] = 7,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            metavar="DIR",
            help="Data dir of the embedded server. Default: a temporary dir, removed when the demo exits.",
            show_default=False,
        ),
    ] = None,
    port: Annotated[
        int, typer.Option("--port", "-p", min=0, max=65535, help="Port of the embedded server (0: a free one).")
    ] = 0,
    endpoint: Endpoint = None,
    config_dir: ConfigDir = None,
    timeout: Timeout = None,
    max_retries: MaxRetries = None,
    verbose: Verbose = False,
) -> None:
    """Publish a made-up 'loan applications' dataset (a reference and daily batches with drift) and print links.

    Without --endpoint, a local server runs in this process on a free port, and the demo's guest
    session is kept in a temporary config dir (unless --config-dir or SONGBIRD_CONFIG_DIR is set).
    """
    with _reported(verbose), contextlib.ExitStack() as stack:
        from whylogs_songbird import demo

        options = _options(endpoint, config_dir, timeout, max_retries)
        console = _stderr()
        if endpoint is not None:
            if data_dir is not None or port:
                raise UsageProblem(
                    "--data-dir and --port are for the demo's own server: leave them out with --endpoint."
                )
            resolve_settings(options)  # check every option before starting anything
        if endpoint is None and data_dir is not None and data_dir.exists() and not data_dir.is_dir():
            raise UsageProblem(f"--data-dir {data_dir} is not a directory.")
        server = None
        if endpoint is None:
            if config_dir is None and not os.environ.get("SONGBIRD_CONFIG_DIR"):
                options["config_dir"] = stack.enter_context(tempfile.TemporaryDirectory(prefix="songbird-demo-"))
            resolve_settings({**options, "endpoint": "http://127.0.0.1:1"})  # check the options, offline
            try:
                from whylogs_songbird.server import LocalServer
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise UsageProblem(
                    f"the demo's local server needs the 'server' extra ({exc.name} is missing): "
                    "pip install 'whylogs-songbird[server]', or pass --endpoint."
                ) from None
            if port:
                _check_port_free("127.0.0.1", port)
            with _status(console, "Starting the local songbird server"):
                server = LocalServer(data_dir, port=port)
                try:
                    server.start()
                except Exception as exc:
                    raise SongbirdError(f"the local songbird server did not start: {exc}") from exc
            stack.callback(server.stop)
            options["endpoint"] = server.url
            console.print(f"local songbird server on {server.url} (data in {server.data_dir})")
        # The demo's data is made again by running it again: nothing to keep in an outbox.
        settings = resolve_settings({**options, "outbox": False})
        started = time.monotonic()
        with _progress(console) as progress:
            task = progress.add_task("Generating loan applications", total=1)
            data = demo.make_demo_data(days)
            progress.advance(task)
            tasks: dict[str, TaskID] = {}

            def step(name: str, done: int, total: int) -> None:
                label = {"profile": "Profiling", "link": "Linking"}.get(name, name)
                if name not in tasks:
                    tasks[name] = progress.add_task(label, total=total)
                progress.update(tasks[name], completed=done, total=total)

            items = demo.profile_demo(data, step)
            upload = progress.add_task("Uploading", total=len(items))
            with Publisher(settings, on_profile=lambda _: progress.advance(upload)) as publisher:
                report = demo.publish_demo(data, items, publisher=publisher, progress=step)
        console.print(
            f"published 1 reference and {len(data.batches)} daily batches to {settings.endpoint} "
            f"in {time.monotonic() - started:.1f}s"
        )
        local_page = f"{server.url}/sessions/{report.session_id}" if server is not None else None
        _print_demo(report, local_page)
        if server is None or no_wait:
            return
        console.print(f"\nServing the observatory at {server.url}; press Ctrl-C to stop.")
        _wait_for_interrupt()
        console.print("stopping.")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _wait_for_interrupt() -> None:
    """Sleep until Ctrl-C (or SIGTERM, so that the temporary dirs are removed then too)."""
    previous = None
    with contextlib.suppress(ValueError):  # only the main thread may set signal handlers
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def main() -> None:
    """Entry point of the ``songbird`` console script."""
    app(prog_name="songbird")


if __name__ == "__main__":  # pragma: no cover
    main()
