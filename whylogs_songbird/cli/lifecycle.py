"""``songbird export``, ``songbird import`` and ``songbird migrate``: move sessions between
servers as bundles (see ``docs/export-import.md``)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from whylogs_songbird.atomic import write_json_atomic
from whylogs_songbird.cli.reporting import (
    ConfigDir,
    Endpoint,
    MaxRetries,
    Timeout,
    UsageProblem,
    Verbose,
    app,
    connection_options,
    reported,
    stderr,
)
from whylogs_songbird.config import resolve_settings
from whylogs_songbird.connect import make_client


@app.command("export")
def export_command(
    session_id: Annotated[str, typer.Argument(metavar="SESSION_ID", help="The session to export.")],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", metavar="FILE", help="Where to write the bundle (a zip).", show_default=False),
    ],
    endpoint: Endpoint = None,
    config_dir: ConfigDir = None,
    timeout: Timeout = None,
    max_retries: MaxRetries = None,
    verbose: Verbose = False,
) -> None:
    """Write a session's profiles, exactly as stored, to a portable bundle (a zip with a manifest)."""
    with reported(verbose):
        settings = resolve_settings(connection_options(endpoint, config_dir, timeout, max_retries))
        partial = output.with_name(output.name + ".part")
        client = make_client(settings)
        try:
            with open(partial, "wb") as target:
                written = client.export_session(session_id, target)
            os.replace(partial, output)
        finally:
            partial.unlink(missing_ok=True)
            client.close()
        typer.echo(str(output))
        stderr().print(f"exported session {session_id} of {settings.endpoint}: {written} bytes")


@app.command("import")
def import_command(
    bundle: Annotated[Path, typer.Argument(metavar="FILE", help="A bundle written by songbird export.")],
    endpoint: Endpoint = None,
    config_dir: ConfigDir = None,
    timeout: Timeout = None,
    max_retries: MaxRetries = None,
    verbose: Verbose = False,
) -> None:
    """Recreate a bundle as a new session on the endpoint; prints its id and its page."""
    with reported(verbose):
        if not bundle.is_file():
            raise UsageProblem(f"{bundle} is not a file: give the path of a bundle written by songbird export.")
        settings = resolve_settings(connection_options(endpoint, config_dir, timeout, max_retries))
        client = make_client(settings)
        try:
            with open(bundle, "rb") as source:
                imported = client.import_bundle(source)
        finally:
            client.close()
        typer.echo(imported.session_id)
        typer.echo(imported.url)
        stderr().print(f"imported {imported.profiles} profiles into a new session at {settings.endpoint}")


#: In the source data dir: which sessions were moved where, so a second run moves only the rest.
MIGRATED_FILE = "migrated.json"


@app.command("migrate")
def migrate_command(
    from_dir: Annotated[
        Path,
        typer.Option(
            "--from", metavar="DATA_DIR", help="The data dir of the embedded store to move.", show_default=False
        ),
    ],
    to: Annotated[
        str,
        typer.Option("--to", metavar="URL", help="The songbird server to move the sessions to.", show_default=False),
    ],
    config_dir: ConfigDir = None,
    timeout: Timeout = None,
    verbose: Verbose = False,
) -> None:
    """Move every guest session of an embedded store to another server: each is exported and
    imported there as a new session; prints ``old id -> new id`` per session."""
    with reported(verbose):
        from whylogs_songbird.server import bundles
        from whylogs_songbird.server.storage import DB_FILE
        from whylogs_songbird.server.store import Store

        if not (from_dir / DB_FILE).is_file():
            raise UsageProblem(f"{from_dir} holds no embedded store ({DB_FILE}): give the data dir of a local server.")
        settings = resolve_settings(connection_options(to, config_dir, timeout, 0))
        ledger_path = from_dir / MIGRATED_FILE
        ledger = json.loads(ledger_path.read_text(encoding="utf-8")) if ledger_path.is_file() else {}
        done: dict[str, str] = ledger.setdefault(settings.endpoint, {})
        store = Store(from_dir)
        client = make_client(settings)
        moved = skipped = 0
        try:
            for session in reversed(store.recent_sessions(store.session_count())):
                if session.id in done or store.guest_session(session.id) is None:
                    skipped += 1
                    continue
                profiles = bundles.exportable(store, session.id)
                if not profiles:
                    skipped += 1
                    continue
                with tempfile.TemporaryFile() as bundle:
                    for chunk in bundles.export_chunks(store, session.id, profiles):
                        bundle.write(chunk)
                    bundle.seek(0)
                    imported = client.import_bundle(bundle)
                done[session.id] = imported.session_id
                write_json_atomic(ledger_path, ledger)
                moved += 1
                typer.echo(f"{session.id} -> {imported.session_id} ({imported.profiles} profiles)")
        finally:
            client.close()
            store.close()
        stderr().print(
            f"moved {moved} sessions to {settings.endpoint}; {skipped} left (moved before, claimed or empty); "
            f"the mapping is in {ledger_path}"
        )
