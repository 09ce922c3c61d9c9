"""The RFC 9470 comparison and challenge: acr against acr_values, auth_time against max_age."""

from __future__ import annotations

import pytest

from agentguard.oauth import StepUpChallenge, step_up_shortfalls, url_elicitation
from tests.oauth.conftest import BRONZE, SILVER

NOW = 1_700_000_000.0
GOLD = "urn:example:gold"


def check(**claims: object) -> list[str]:
    return step_up_shortfalls(claims, acr_values=[SILVER, GOLD], max_age=300, now=NOW)


def test_a_fresh_enough_token_at_an_accepted_level_passes() -> None:
    assert check(acr=SILVER, auth_time=NOW - 299) == []
    assert check(acr=GOLD, auth_time=NOW) == []


def test_an_authentication_older_than_max_age_falls_short() -> None:
    (why,) = check(acr=SILVER, auth_time=NOW - 301)
    assert why == "the user authenticated 301s ago, more than max_age 300s"


@pytest.mark.parametrize(("claims", "words"), [
    ({"acr": BRONZE, "auth_time": NOW}, f"acr '{BRONZE}' is not one of the required acr_values"),
    ({"auth_time": NOW}, "carries no acr"),
    ({"acr": 3, "auth_time": NOW}, "carries no acr"),
    ({"acr": SILVER}, "carries no auth_time"),
    ({"acr": SILVER, "auth_time": True}, "carries no auth_time"),
    ({"acr": SILVER, "auth_time": NOW + 3600}, "in the future"),
])
def test_a_wrong_or_missing_level_or_time_falls_short(claims: dict, words: str) -> None:
    (why,) = check(**claims)
    assert words in why


def test_both_shortfalls_are_named() -> None:
    reasons = check(acr=BRONZE, auth_time=NOW - 3600)
    assert len(reasons) == 2 and "acr_values" in reasons[0] and "max_age" in reasons[1]


def test_no_requirement_means_any_valid_token() -> None:
    assert step_up_shortfalls({}, now=NOW) == []
    assert step_up_shortfalls({}, acr_values=(), max_age=0, now=NOW) == []


def test_a_hostile_acr_is_shown_escaped() -> None:
    (why,) = check(acr="\x1b[31mgold\u202e", auth_time=NOW)
    assert "\x1b" not in why and "\u202e" not in why


def test_the_challenge_header_follows_rfc_9470() -> None:
    challenge = StepUpChallenge(acr_values=(SILVER, GOLD), max_age=300,
                                description="a stronger authentication is required")
    assert challenge.www_authenticate() == (
        'Bearer error="insufficient_user_authentication", '
        'error_description="a stronger authentication is required", '
        f'acr_values="{SILVER} {GOLD}", max_age="300"')
    assert challenge.status == 401
    assert challenge.body() == {"error": "insufficient_user_authentication",
                                "error_description": "a stronger authentication is required",
                                "acr_values": f"{SILVER} {GOLD}", "max_age": 300}


def test_the_challenge_header_cannot_be_broken_out_of() -> None:
    challenge = StepUpChallenge(acr_values=('a"b\\c',), description='say "hi"\r\nX-Evil: 1')
    header = challenge.www_authenticate(realm="agent guard",
                                        resource_metadata="https://p.test/.well-known/x")
    assert header == ('Bearer realm="agent guard", error="insufficient_user_authentication", '
                      "error_description=\"say 'hi'''X-Evil: 1\", "
                      'acr_values="a\\"b\\\\c", '
                      'resource_metadata="https://p.test/.well-known/x"')
    assert "\r" not in header and "\n" not in header
    assert 'max_age' not in StepUpChallenge(acr_values=("x",)).www_authenticate()


def test_the_challenge_url_carries_the_requirement() -> None:
    challenge = StepUpChallenge(acr_values=(SILVER,), max_age=300)
    assert challenge.url("https://idp.test/authorize?prompt=login") == (
        "https://idp.test/authorize?prompt=login&acr_values=urn%3Amace%3Aincommon%3Aiap"
        "%3Asilver&max_age=300")


def test_url_elicitation_is_the_mcp_error_for_url_mode() -> None:
    from mcp import UrlElicitationRequiredError

    error = url_elicitation(StepUpChallenge(acr_values=(SILVER,), max_age=300),
                            "https://idp.test/step-up", elicitation_id="stepup-1")
    assert isinstance(error, UrlElicitationRequiredError)
    assert error.error.code == -32042
    (params,) = error.error.data["elicitations"]
    assert params["mode"] == "url" and params["elicitationId"] == "stepup-1"
    assert params["url"].startswith("https://idp.test/step-up?acr_values=")
    assert SILVER in params["message"] and "300s" in params["message"]
