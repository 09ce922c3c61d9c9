"""Command line interface (``agentguard ...``).

Importing this package is cheap: the command tree (``app``) is built on first use, so that
``agentguard proxy ... -- CMD`` can start its upstream before typer, pydantic and the MCP SDK
load (see :mod:`agentguard.proxy.early_spawn`).
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer

    app: typer.Typer

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    if sys.argv[1:2] == ["proxy"]:
        from agentguard.proxy.early_spawn import start_early

        start_early(sys.argv[2:])
        import typer

        from agentguard.cli.helptext import name_metavars
        from agentguard.cli.proxy_cmd import main_app

        name_metavars(typer.main.get_command(main_app()))()
        return
    from agentguard.cli.app import main as run

    run()


class _Package(types.ModuleType):
    """``agentguard.cli.app`` names the command tree, imported when first asked for.

    The import system binds the submodule of the same name on this package once it is
    loaded; the property keeps the name meaning the Typer application, as it always has.
    """

    @property
    def app(self) -> Any:
        from agentguard.cli.app import app

        return app

    @app.setter
    def app(self, value: Any) -> None:
        pass


sys.modules[__name__].__class__ = _Package
