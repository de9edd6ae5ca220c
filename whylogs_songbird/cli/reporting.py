"""Reporting plumbing of the ``songbird`` command: the app, shared options, output, logging and errors.

Exit codes: 0 success; 1 a failed upload, an unreachable or failing server; 2 a usage error (a bad
option, an input file that is missing, unreadable or malformed, a bad ``--timestamp``, an unknown
``--segment-by`` column, a bad setting); 130 interrupted (Ctrl-C). Errors are one line on stderr
starting with ``error:``; ``--verbose`` adds the traceback and the library's debug log. Links go to
stdout, progress and messages to stderr, so ``songbird profile data.csv > links.txt`` keeps only
the links. A reader that goes away (``| head -1``) or a closed stdout never fails a command: what
it no longer reads is dropped and the command ends with its own exit code (`guard_output`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import sys
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from typer.core import TyperGroup

from whylogs_songbird.config import Settings
from whylogs_songbird.errors import (
    ConfigError,
    DataFileError,
    ProfileError,
    PublishError,
    SongbirdError,
)
from whylogs_songbird.help_text import tidy_help
from whylogs_songbird.profiles import ProfileItem
from whylogs_songbird.publish import Publisher, PublishResult

try:  # typer >= 0.2x carries its own copy of click
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - older typer on click
    from click.exceptions import NoArgsIsHelpError, UsageError  # type: ignore[assignment]

#: Exit codes (the table in docs/cli.md).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


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
            typer.echo(f"error: {one_line(exc.format_message())}{hint}", err=True)
            code = exc.exit_code
        except typer.Abort:
            typer.echo("error: aborted.", err=True)
            code = EXIT_FAILED
        except KeyboardInterrupt:  # Ctrl-C outside a command's own handling (parsing, imports, prompts)
            typer.echo("interrupted.", err=True)
            code = EXIT_INTERRUPTED
        if standalone_mode:
            sys.exit(code)
        return code

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            tidy_help(command)
        return command

    def format_help(self, ctx: Any, formatter: Any) -> None:
        tidy_help(self)
        super().format_help(ctx, formatter)


app = typer.Typer(
    cls=_Group,
    name="songbird",
    help="Publish whylogs profiles to songbird (WhyLabs guest sessions), or to a local songbird server.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def profiles(count: int) -> str:
    """``1 profile``, ``3 profiles``: how the commands count profiles in their messages."""
    return f"{count} profile{'s' if count != 1 else ''}"


def command_group(name: str, help: str) -> typer.Typer:  # noqa: A002 - Typer's own word
    """A ``songbird <name> ...`` group of commands."""
    group = typer.Typer(help=help, no_args_is_help=True)
    app.add_typer(group, name=name)
    return group


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


# -- output whose reader went away ------------------------------------------------------------


class _ReaderGone:
    """A text stream that drops what is written once its reader went away (a broken pipe, a closed
    file), instead of failing the command; every other attribute is the wrapped stream's."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.gone = False

    def _lost(self) -> None:
        self.gone = True
        with contextlib.suppress(OSError, ValueError):  # what is still buffered goes nowhere at exit
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                return int(self._stream.write(text))
            except (BrokenPipeError, ValueError):
                self._lost()
            except OSError as exc:
                if exc.errno not in (errno.EPIPE, errno.EBADF):
                    raise
                self._lost()
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self._stream.flush()
            except (BrokenPipeError, ValueError):
                self._lost()
            except OSError as exc:
                if exc.errno not in (errno.EPIPE, errno.EBADF):
                    raise
                self._lost()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def guard_output() -> None:
    """Make stdout and stderr drop output once their reader is gone (``songbird ... | head -1``)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _ReaderGone):
            setattr(sys, name, _ReaderGone(stream))


# -- shared options ---------------------------------------------------------------------------

_CONNECTION = "Connection"
Endpoint = Annotated[
    str | None,
    typer.Option(
        "--endpoint",
        metavar="URL",
        help="songbird API base URL. Default: $SONGBIRD_API_ENDPOINT, then the config file, "
        "then the local songbird server at http://127.0.0.1:8737 (started if need be).",
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


def connection_options(
    endpoint: str | None, config_dir: Path | None, timeout: float | None, max_retries: int | None
) -> dict[str, Any]:
    """The settings options of the shared connection flags (None: not given)."""
    return {"endpoint": endpoint, "config_dir": config_dir, "timeout": timeout, "max_retries": max_retries}


# -- output, logging and errors ---------------------------------------------------------------


def songbird_command() -> str:
    """How to type this ``songbird`` command here: ``songbird`` when it is on ``PATH``, otherwise the
    script next to this Python (``.venv/bin/songbird``), otherwise ``python -m whylogs_songbird``."""
    if shutil.which("songbird"):
        return "songbird"
    script = Path(sys.executable).parent / "songbird"
    if script.exists():
        relative = os.path.relpath(script)
        return relative if not relative.startswith("..") else str(script)
    return f"{sys.executable} -m whylogs_songbird"


def stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def one_line(text: str) -> str:
    return " ".join(str(text).split())


class _WarningsOnly(logging.Filter):
    """Without --verbose: the library's warnings (e.g. a renewed session), not its errors (we report those).

    The outbox's own warnings are left out: the ``error:`` line already says what is still
    waiting. The publisher's warnings (a duplicate upload the server ignored, a missing link) show.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno == logging.WARNING and record.name not in _REPORTED_BY_THE_CLI


_REPORTED_BY_THE_CLI = frozenset({"whylogs_songbird.outbox.storage", "whylogs_songbird.outbox.delivery"})


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"warning: {one_line(record.getMessage())}"


@contextlib.contextmanager
def library_log(verbose: bool) -> Iterator[None]:
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


def fail(message: str, code: int, verbose: bool = False, exc: BaseException | None = None) -> NoReturn:
    if verbose and exc is not None:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def reported(verbose: bool, *, show_library_log: bool = True) -> Iterator[None]:
    """Turn the library's exceptions into one ``error:`` line and the documented exit code.

    With ``show_library_log``, the library's log goes to stderr meanwhile (see `library_log`).
    """
    with library_log(verbose) if show_library_log else contextlib.nullcontext():
        try:
            yield
        except typer.Exit:
            raise
        except (ConfigError, ProfileError, DataFileError, UsageProblem) as exc:
            fail(str(exc), EXIT_USAGE, verbose, exc)
        except PublishError as exc:
            if isinstance(exc.result, PublishResult) and verbose:
                for failed in exc.result.failed:
                    typer.echo(f"  failed: {failed.label}: {failed.error}", err=True)
            fail(str(exc), EXIT_FAILED, verbose, exc)
        except SongbirdError as exc:
            fail(str(exc), EXIT_FAILED, verbose, exc)
        except KeyboardInterrupt:
            typer.echo("interrupted.", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:
            hint = "" if verbose else " (run with --verbose for the traceback)"
            fail(f"unexpected {type(exc).__name__}: {exc}{hint}", EXIT_FAILED, verbose, exc)


def progress_bars(console: Console) -> Progress:
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


def publish_with_progress(settings: Settings, items: Sequence[ProfileItem], progress: Progress) -> PublishResult:
    task = progress.add_task("Uploading", total=len(items))
    with Publisher(settings, on_profile=lambda _: progress.advance(task)) as publisher:
        return publisher.publish(items)


def finish(result: PublishResult, what: str = "") -> None:
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
    stderr().print(
        f"published {profiles(len(result.profiles))}{what} to {result.endpoint} in session {result.session_id}"
    )


@contextlib.contextmanager
def status(console: Console, text: str) -> Iterator[None]:
    """A spinner on a terminal, nothing otherwise."""
    if console.is_terminal:
        with console.status(text):
            yield
    else:
        yield
