"""``songbird session ...``: inspect and manage the stored guest session of an endpoint."""

from __future__ import annotations

from typing import Annotated

import typer

from whylogs_songbird import session as sessions
from whylogs_songbird.cli.reporting import (
    ConfigDir,
    Endpoint,
    MaxRetries,
    Timeout,
    UsageProblem,
    Verbose,
    command_group,
    connection_options,
    reported,
    stderr,
)
from whylogs_songbird.client import HOSTED_ENDPOINT
from whylogs_songbird.config import resolve_settings

session_app = command_group("session", "Inspect and manage the stored guest session of an endpoint.")


@session_app.command("show")
def session_show(
    endpoint: Endpoint = None,
    config_dir: ConfigDir = None,
    verbose: Verbose = False,
) -> None:
    """Show the session the next publish to the endpoint will use (no network call)."""
    with reported(verbose):
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
        if session_id is not None and settings.endpoint != HOSTED_ENDPOINT:
            typer.echo(f"page:       {settings.endpoint}/sessions/{session_id}")


@session_app.command("new")
def session_new(
    endpoint: Endpoint = None,
    config_dir: ConfigDir = None,
    timeout: Timeout = None,
    max_retries: MaxRetries = None,
    verbose: Verbose = False,
) -> None:
    """Start a new guest session now and store it, replacing the stored one."""
    with reported(verbose):
        options = connection_options(endpoint, config_dir, timeout, max_retries)
        settings = resolve_settings(options)
        session_id = sessions.new_session(**options)
        typer.echo(session_id)
        stderr().print(f"new guest session at {settings.endpoint}; the next publishes go into it")


@session_app.command("forget")
def session_forget(
    endpoint: Endpoint = None,
    config_dir: ConfigDir = None,
    verbose: Verbose = False,
) -> None:
    """Forget the stored session (the server keeps it); the next publish starts a new one."""
    with reported(verbose):
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
    with reported(verbose):
        options = {**connection_options(endpoint, config_dir, timeout, max_retries), "org_id": org_id}
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
        stderr().print("the session is now expired; the next publish starts a new guest session")


@session_app.command("delete")
def session_delete(
    session_id: Annotated[
        str | None,
        typer.Argument(metavar="[SESSION_ID]", help="The session to delete. Default: the stored session."),
    ] = None,
    endpoint: Endpoint = None,
    config_dir: ConfigDir = None,
    timeout: Timeout = None,
    max_retries: MaxRetries = None,
    verbose: Verbose = False,
) -> None:
    """Delete a guest session on the server, with every profile and its bytes (cannot be undone)."""
    with reported(verbose):
        options = connection_options(endpoint, config_dir, timeout, max_retries)
        settings = resolve_settings(options)
        deleted = sessions.delete_session(session_id, **options)
        typer.echo(f"deleted session {deleted} of {settings.endpoint}")
