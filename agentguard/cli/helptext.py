"""Names for values in ``--help``: ``--store URL`` and ``approve ID``, never ``<str>``."""

from __future__ import annotations

from typing import Any

from typer.core import TyperCommand

__all__ = ["ARG_METAVARS", "METAVARS", "NamedArgsCommand", "name_arguments", "name_metavars"]

#: Names of positional arguments by parameter name; others show their name in capitals.
ARG_METAVARS = {"request_id": "ID", "grant_id": "ID", "command": "COMMAND", "hash_": "HASH"}

#: Value names by option name (without dashes); other options show their name in capitals.
METAVARS = {
    "answer": "WHO", "args": "JSON", "as": "NAME", "at": "TIME", "audit": "PATH",
    "call": "JSON", "code": "CODE", "config": "PATH", "env": "KEY=VALUE", "for": "DURATION",
    "hash": "HASH", "home": "DIR", "host": "HOST", "interval": "SECONDS", "key": "PATH",
    "listen": "HOST:PORT", "log-level": "LEVEL", "n": "N", "name": "NAME", "out": "PATH",
    "policy": "PATH", "port": "PORT", "principal": "ID", "reason": "TEXT",
    "service-key": "PATH", "slack-config": "PATH", "store": "URL", "top": "N",
    "trust": "PATH", "upstream-mode": "MODE", "upstream-url": "URL",
    "webhook-identity-prefix": "PREFIX",
}


def name_metavars(command: Any) -> Any:
    """Give every option that takes a value and has no metavar a readable one, recursively.

    ``command`` is what ``typer.main.get_command`` returns (Typer's own click-like command
    classes, so this reads only the attributes click documents for parameters).
    """
    for param in command.params:
        if (param.param_type_name == "option" and param.metavar is None
                and not getattr(param, "is_flag", False) and not getattr(param, "count", False)):
            longest = max(param.opts, key=len).lstrip("-")
            param.metavar = METAVARS.get(longest, longest.upper().replace("-", "_"))
    for sub in getattr(command, "commands", {}).values():
        name_metavars(sub)
    return command


def _arg_name(param: Any) -> str:
    name = param.metavar or ARG_METAVARS.get(param.name or "", (param.name or "ARG").upper())
    return name + ("..." if param.nargs != 1 else "")


class NamedArgsCommand(TyperCommand):
    """A command whose help names positional arguments (``ID``, ``PATH``) instead of showing
    their Python type (``request_id <str>``); options are listed as Typer lists them."""

    # ``ctx``, ``formatter`` and parameters are Typer's own click-like classes (Typer vendors
    # click privately), so they are typed by what is read of them.
    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """``[OPTIONS] ID`` with optional arguments in brackets."""
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = _arg_name(param)
                pieces.append(name if param.required else f"[{name}]")
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        """The Arguments and Options sections."""
        args: list[tuple[str, str]] = []
        opts: list[tuple[str, str]] = []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                if getattr(param, "hidden", False):
                    continue
                text = getattr(param, "help", None) or ""
                if param.required:
                    text = f"{text}  [required]".strip()
                args.append((_arg_name(param), text))
            else:
                record = param.get_help_record(ctx)
                if record is not None:
                    opts.append(record)
        if args:
            with formatter.section("Arguments"):
                formatter.write_dl(args)
        if opts:
            with formatter.section("Options"):
                formatter.write_dl(opts)


def name_arguments(app: Any) -> Any:
    """Build every command of the Typer ``app`` (and its sub-apps) as a
    :class:`NamedArgsCommand`, unless it names a class of its own (Typer fills in its
    default class at registration). Call before the app runs."""
    for info in app.registered_commands:
        if info.cls in (None, TyperCommand):
            info.cls = NamedArgsCommand
    for group in app.registered_groups:
        if group.typer_instance is not None:
            name_arguments(group.typer_instance)
    return app
