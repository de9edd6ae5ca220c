"""``songbird export`` and ``songbird import``: move a session between servers as a bundle."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

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
