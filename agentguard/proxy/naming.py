"""An upstream's default name: what the server calls itself (``serverInfo.name``).

A server started without ``--name`` (or ``name:``) is named after its ``serverInfo.name``,
as the audit log, ``pins approve`` and policies will see it, instead of its executable's
basename (every Python server would be ``python``). The server chooses that name, so two
guards keep it from choosing its privileges:

* **Remembered per command.** The first name a command line (or URL) got is kept in the store
  (``~names/<sha256>``); a later, different ``serverInfo.name`` for the same command keeps the
  remembered name, with a warning. Otherwise an upstream could rename itself to start over
  with fresh pins (a new name's first listing pins every tool unreviewed).
* **No trust by self-description.** A derived name the policy trusts explicitly (its trust
  differs from the default for servers it does not list) is refused at start: trusting a
  server takes a name the operator gave, ``--name`` or ``name:``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

from agentguard.errors import ConfigError
from agentguard.proxy.config import UpstreamConfig

__all__ = ["NAMES", "adopt_name", "name_from_info"]

logger = logging.getLogger(__name__)

NAMES = "~names"
"""Pin-store namespace of remembered names (server names cannot start with ``~``)."""
_UNLISTED = "~unlisted~"


def name_from_info(info_name: str | None) -> str | None:
    """A valid server name made of ``serverInfo.name`` (None when nothing usable is left)."""
    if not info_name:
        return None
    name = re.sub(r"[^A-Za-z0-9-]+", "_", info_name).strip("_-")
    name = re.sub(r"_+", "_", name)[:64].strip("_-")
    if name == "local":  # reserved for in-process tools (see UpstreamConfig)
        name = "local-upstream"
    return name or None


def _key(cfg: UpstreamConfig) -> str:
    target = cfg.url or "\x00".join([cfg.command or "", *cfg.args, cfg.cwd or ""])
    return hashlib.sha256(target.encode()).hexdigest()


async def adopt_name(store: Any, policy: Any, cfg: UpstreamConfig, info_name: str | None,
                     taken: set[str]) -> str:
    """The name an upstream without an explicit one goes by.

    Args:
        store: The pin store (remembered names).
        policy: The policy (server trust).
        cfg: The upstream's config; ``cfg.name`` is the placeholder derived from the command.
        info_name: The server's ``serverInfo.name``.
        taken: Names other upstreams already use.

    Raises:
        ConfigError: the name would be one the policy trusts.
    """
    key = _key(cfg)
    remembered = await store.get_pin(NAMES, key)
    derived = name_from_info(info_name) or cfg.name
    name = remembered or derived
    if remembered and remembered != derived:
        logger.warning("upstream %s now calls itself %r; keeping its name %r (give --name to "
                       "rename it)", cfg.describe(), info_name, remembered)
    if name in taken:
        logger.warning("upstream %s calls itself %r, which another upstream is named; using "
                       "%r", cfg.describe(), name, cfg.name)
        return cfg.name
    if policy.server_trust(name) == "trusted" != policy.server_trust(_UNLISTED):
        raise ConfigError(
            f"upstream {cfg.describe()} calls itself {name!r}, a server the policy trusts; "
            f"a server cannot name itself into trust: give the name yourself (--name {name} "
            "or `name:` in the config)")
    if remembered is None:
        await store.set_pin(NAMES, key, name)
    return name
