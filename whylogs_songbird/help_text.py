"""Typer help without type placeholders, for the ``songbird`` command and ``python -m whylogs_songbird.server``."""

from __future__ import annotations

from typing import Any

from typer.core import TyperCommand


def _type_column(param: Any) -> Any:
    """What the help shows after an option: its metavar (DIR, URL, N), nothing for a flag, never ``<type>``."""

    def shown(ctx: Any) -> str | None:
        if getattr(param, "is_flag", False) or getattr(param, "is_bool_flag", False):
            return None
        if getattr(param, "param_type_name", "") == "argument":
            return None  # its name column already shows the metavar
        if param.metavar:
            return str(param.metavar)
        return None

    return shown


def tidy_help(command: Any) -> None:
    """Help without Typer's type placeholders (``<bool>``, ``<list[Path]>``), in this command and below it."""
    if getattr(command, "_songbird_tidy", False):
        return
    command._songbird_tidy = True
    for param in getattr(command, "params", []):
        param.display_type_rich = _type_column(param)
    get_help_option = command.get_help_option

    def tidy_help_option(ctx: Any) -> Any:
        option = get_help_option(ctx)
        if option is not None:
            option.display_type_rich = _type_column(option)
        return option

    command.get_help_option = tidy_help_option
    for sub in getattr(command, "commands", {}).values():
        tidy_help(sub)


class TidyCommand(TyperCommand):
    """A single Typer command whose ``--help`` goes through :func:`tidy_help`."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        tidy_help(self)
        super().format_help(ctx, formatter)
