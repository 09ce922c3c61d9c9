"""The README's TokenValidator example runs as written (nothing is fetched at construction)."""

from __future__ import annotations

import re
from pathlib import Path

from agentguard import Guard, Policy
from agentguard.oauth import BearerAuth, TokenValidator

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_token_validator_example_runs() -> None:
    section = README.read_text().split("## OAuth step-up on the HTTP proxy", 1)[1]
    code = re.search(r"```python\n(.*?)\n```", section, re.S)
    assert code is not None

    async def app(scope, receive, send) -> None:  # pragma: no cover - never called
        return None

    names = {"app": app, "policy": Policy.from_yaml("rules: []\n"), "Guard": Guard}
    exec(code.group(1), names)  # the documented example itself
    validator = names["validator"]
    assert isinstance(validator, TokenValidator) and isinstance(names["app"], BearerAuth)
    assert validator.issuer == "https://login.example"
    assert validator.audiences == ("https://proxy.example/mcp",)
    assert isinstance(names["guard"], Guard)
