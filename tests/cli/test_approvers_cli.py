"""`agentguard approvers keygen|pubkey|list|verify-file` through the real CLI."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentguard.cli import app
from agentguard.trust import TrustAnchors, VoteStatement, load_signing_key, sign, verify_vote
from agentguard.trust.keys import key_id

runner = CliRunner()
H = "0" * 64


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("AGENTGUARD_APPROVER_KEY", "AGENTGUARD_APPROVER", "AGENTGUARD_TRUST"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "home"


def keygen(*args: str) -> str:
    result = runner.invoke(app, ["approvers", "keygen", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_keygen_writes_the_default_key_and_prints_a_trust_entry(home: Path,
                                                               tmp_path: Path) -> None:
    entry = keygen("--name", "user:Dave")
    path = home / ".config" / "agentguard" / "approver.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    # The printed entry pasted under `approvers:` is a working trust file ...
    trust = tmp_path / "trust.yaml"
    trust.write_text("approvers:\n" + entry + "\n")
    anchors = TrustAnchors.load(trust)
    assert anchors.approvers[0].identity == "dave"
    key = load_signing_key(path)
    assert anchors.approvers[0].key_ids == (key_id(key.public_key()),)
    # ... under which the new key's votes verify.
    statement = VoteStatement.for_vote(request_id="r1", call_hash=H, rule_id="x",
                                       settings_hash=H, approve=True, approver="dave", at=1,
                                       shown_hash=H)
    vote = verify_vote(sign(statement, key), request_id="r1", call_hash=H, rule_id="x",
                       settings_hash=H, anchors=anchors)
    assert not isinstance(vote, str) and vote.identity == "dave"


def test_keygen_honours_out_and_the_environment(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    keygen("--out", str(tmp_path / "a" / "k1"))
    assert (tmp_path / "a" / "k1").exists()
    monkeypatch.setenv("AGENTGUARD_APPROVER_KEY", str(tmp_path / "b" / "k2"))
    monkeypatch.setenv("AGENTGUARD_APPROVER", "erin")
    assert '- id: "erin"' in keygen()
    assert (tmp_path / "b" / "k2").exists()


def test_keygen_never_overwrites(home: Path) -> None:
    keygen()
    path = home / ".config" / "agentguard" / "approver.key"
    before = path.read_bytes()
    result = runner.invoke(app, ["approvers", "keygen"])
    assert result.exit_code == 1 and "never overwritten" in result.output
    assert path.read_bytes() == before


def test_pubkey_prints_the_same_entry(tmp_path: Path) -> None:
    out = str(tmp_path / "k" / "approver.key")
    entry = keygen("--name", "frank", "--out", out)
    result = runner.invoke(app, ["approvers", "pubkey", "--name", "frank", "--key", out])
    assert result.exit_code == 0 and result.stdout == entry
    Path(out).chmod(0o644)
    result = runner.invoke(app, ["approvers", "pubkey", "--key", out])
    assert result.exit_code == 1 and "chmod 600" in result.output


def trust_file(tmp_path: Path) -> Path:
    dave = keygen("--name", "dave", "--out", str(tmp_path / "k" / "dave"))
    erin = keygen("--name", "erin", "--out", str(tmp_path / "k" / "erin"))
    serve = keygen("--name", "serve", "--out", str(tmp_path / "k" / "serve"))
    serve_key = serve.split('keys: ["')[1].split('"')[0]
    path = tmp_path / "trust.yaml"
    path.write_text(f"approvers:\n{dave}\n{erin}\nservices:\n- name: serve\n"
                    f"  key: {serve_key}\n  may_vouch_for: ['slack:*']\n")
    return path


def test_list_shows_identities_kinds_and_key_ids(tmp_path: Path) -> None:
    path = trust_file(tmp_path)
    result = runner.invoke(app, ["approvers", "list", "--trust", str(path)])
    assert result.exit_code == 0, result.output
    anchors = TrustAnchors.load(path)
    for kid in (*anchors.approvers[0].key_ids, *anchors.approvers[1].key_ids,
                anchors.services[0].key_id):
        assert kid in result.stdout
    assert "dave" in result.stdout and "service" in result.stdout
    assert "slack:*" in result.stdout


def test_verify_file_reports_writable_anchors_as_warnings(tmp_path: Path,
                                                          monkeypatch) -> None:
    path = trust_file(tmp_path)
    path.chmod(0o666)
    monkeypatch.setenv("AGENTGUARD_TRUST", str(path))
    result = runner.invoke(app, ["approvers", "verify-file"])
    assert result.exit_code == 0, result.output
    assert "ok:" in result.stdout and "2 approvers, 1 services, 3 keys" in result.stdout
    assert "warning: trust file" in result.stderr and "mode 666" in result.stderr
    strict = runner.invoke(app, ["approvers", "verify-file", "--strict"])
    assert strict.exit_code == 1


def test_verify_file_names_file_and_field_of_an_error(tmp_path: Path) -> None:
    path = trust_file(tmp_path)
    text = path.read_text()
    path.write_text(text.replace("slack:*", "*"))
    result = runner.invoke(app, ["approvers", "verify-file", "--trust", str(path)])
    assert result.exit_code == 1
    assert f"trust file {path}: services.0.may_vouch_for" in result.stderr
    path.write_text(text.replace("services:", '- id: "user:Dave"\n  keys: []\nservices:'))
    result = runner.invoke(app, ["approvers", "verify-file", "--trust", str(path)])
    assert result.exit_code == 1
    assert f"trust file {path}: approvers.2.id: 'dave' is listed twice" in result.stderr


def test_help_explains_each_command() -> None:
    result = runner.invoke(app, ["approvers", "--help"])
    assert result.exit_code == 0
    for command in ("keygen", "pubkey", "list", "verify-file"):
        assert command in result.stdout
    result = runner.invoke(app, ["approvers", "keygen", "--help"])
    assert "0600" in result.stdout and "--out" in result.stdout


def test_enroll_link_prints_a_link_whose_token_the_trust_file_accepts(
        home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agentguard.trust.enrol import verify_enrolment

    entry = keygen("--name", "dave")
    trust = tmp_path / "trust.yaml"
    trust.write_text("approvers:\n" + entry + "\n")
    monkeypatch.delenv("AGENTGUARD_WEB_URL", raising=False)
    result = runner.invoke(app, ["approvers", "enroll-link", "dave", "--url",
                                 "https://approvals.example.com/", "--ttl", "5m"])
    assert result.exit_code == 0, result.output
    link = result.stdout.strip()
    assert link.startswith("https://approvals.example.com/enroll#")
    grant = verify_enrolment(link.split("#", 1)[1], TrustAnchors.load(trust))
    assert not isinstance(grant, str) and grant.approver == "dave"
    missing = runner.invoke(app, ["approvers", "enroll-link", "dave", "--key",
                                  str(tmp_path / "nope.key")])
    assert missing.exit_code != 0
