"""The trust file: validated at the boundary, one key one person, and loud when writable."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

from agentguard.trust.anchors import TrustAnchors, TrustFileError
from agentguard.trust.keys import key_id, public_key_text
from tests.trust.conftest import Keys, trust_data


def write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_loads_approvers_services_and_key_bindings(tmp_path: Path, keys: Keys) -> None:
    anchors = TrustAnchors.load(write(tmp_path / "trust.yaml", trust_data(keys)))
    assert [a.identity for a in anchors.approvers] == ["dave", "erin", "frank"]
    dave = anchors.approver("User:Dave")
    assert dave is not None and len(dave.key_ids) == 2
    binding = anchors.key(key_id(keys.erin.public_key()))
    assert binding is not None and binding.approver is not None
    assert binding.approver.identity == "erin" and binding.service is None
    serve = anchors.key(key_id(keys.serve.public_key()))
    assert serve is not None and serve.service is not None and serve.approver is None
    assert serve.service.may_vouch("slack:U012ABC") and not serve.service.may_vouch("dave")
    assert anchors.key(key_id(keys.stranger.public_key())) is None
    assert anchors.key(None) is None  # type: ignore[arg-type]


def test_json_is_read_too(tmp_path: Path, keys: Keys) -> None:
    path = tmp_path / "trust.json"
    path.write_text(json.dumps(trust_data(keys)))
    assert len(TrustAnchors.load(path).approvers) == 3


def test_empty_file_is_an_empty_trust(tmp_path: Path) -> None:
    path = tmp_path / "trust.yaml"
    path.write_text("")
    anchors = TrustAnchors.load(path)
    assert anchors.approvers == () and anchors.services == ()


def test_one_key_one_person(keys: Keys) -> None:
    data = trust_data(keys)
    data["approvers"][1]["keys"].append(public_key_text(keys.dave.public_key()))
    with pytest.raises(TrustFileError, match=r"approvers\.1\.keys\.1: key .* already listed "
                                             r"for dave \(one key, one person\)"):
        TrustAnchors.from_mapping(data, source="t.yaml")


def test_a_service_key_may_not_also_be_a_persons_key(keys: Keys) -> None:
    data = trust_data(keys)
    data["services"][0]["key"] = public_key_text(keys.frank.public_key())
    with pytest.raises(TrustFileError, match=r"services\.0\.key: .* already listed for frank"):
        TrustAnchors.from_mapping(data)


def test_one_person_is_listed_once_in_any_spelling(keys: Keys) -> None:
    data = trust_data(keys)
    data["approvers"].append({"id": "user:DAVE", "keys": []})
    with pytest.raises(TrustFileError, match=r"approvers\.3\.id: 'dave' is listed twice"):
        TrustAnchors.from_mapping(data)


@pytest.mark.parametrize("mutate, where", [
    (lambda d: d["approvers"][0].update(keys=["ssh-ed25519 AAAA"]), r"approvers\.0\.keys\.0"),
    (lambda d: d["approvers"][0].update(key="typo"), r"approvers\.0\.key"),
    (lambda d: d["approvers"][2].update(id=""), r"approvers\.2\.id"),
    (lambda d: d["services"][0].update(may_vouch_for=["*"]), r"services\.0\.may_vouch_for"),
    (lambda d: d["services"][0].update(may_vouch_for=["dave"]), r"services\.0\.may_vouch_for"),
    (lambda d: d["services"][0].update(may_vouch_for=["user:*"]),
     r"services\.0\.may_vouch_for"),
    (lambda d: d["services"][0].update(may_vouch_for=["*:x"]), r"services\.0\.may_vouch_for"),
    (lambda d: d["services"][0].update(may_vouch_for=[]), r"services\.0\.may_vouch_for"),
    (lambda d: d["services"].append(dict(d["services"][0])), r"services\.1\.name"),
    (lambda d: d.update(version=2), r"version"),
    (lambda d: d.update(admins=["nobody"]), r"admins"),
    (lambda d: d["approvers"][0].update(passkeys=[{"credential_id": "x"}]),
     r"approvers\.0\.passkeys\.0\.public_key"),
])
def test_errors_name_the_file_and_the_field(keys: Keys, mutate, where: str) -> None:
    data = trust_data(keys)
    mutate(data)
    with pytest.raises(TrustFileError, match=rf"^trust file t\.yaml: {where}"):
        TrustAnchors.from_mapping(data, source="t.yaml")


def test_unreadable_and_invalid_files_are_errors(tmp_path: Path) -> None:
    with pytest.raises(TrustFileError, match="cannot read"):
        TrustAnchors.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("approvers: [\n")
    with pytest.raises(TrustFileError, match="not valid YAML"):
        TrustAnchors.load(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- dave\n")
    with pytest.raises(TrustFileError, match=str(listy)):
        TrustAnchors.load(listy)


# --------------------------------------------------------------------- writable anchors
def test_a_trust_file_this_process_can_write_is_reported(tmp_path: Path, keys: Keys) -> None:
    path = write(tmp_path / "trust.yaml", trust_data(keys))
    path.chmod(0o644)
    warnings = TrustAnchors.load(path).warnings
    assert any("trust file" in w and "the agent must not be able to write" in w
               for w in warnings), warnings


def test_a_read_only_file_the_agent_owns_is_still_reported(tmp_path: Path, keys: Keys) -> None:
    path = write(tmp_path / "trust.yaml", trust_data(keys))
    path.chmod(0o444)
    warnings = TrustAnchors.load(path).warnings
    # The owner can chmod it back (root can write it anyway): either way, a warning.
    assert any(w.startswith(f"trust file {path}") for w in warnings), warnings


def test_group_or_world_writable_file_and_directory_are_reported(
        tmp_path: Path, keys: Keys) -> None:
    path = write(tmp_path / "trust.yaml", trust_data(keys))
    path.chmod(0o666)
    tmp_path.chmod(0o777)
    warnings = TrustAnchors.load(path).warnings
    assert any("trust file" in w and "group or others (mode 666)" in w for w in warnings)
    assert any("trust directory" in w and "group or others (mode 777)" in w for w in warnings)


def warnings_as(uid: int, path: Path) -> list[str]:
    """``TrustAnchors.load(path).warnings`` computed in a forked child running as ``uid``."""
    read, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        status = 1
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            os.write(write_end, json.dumps(list(TrustAnchors.load(path).warnings)).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read, "rb") as fh:
        data = fh.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return json.loads(data)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to deploy a file as another user")
@pytest.mark.parametrize("file_mode, expect", [
    (0o644, []), (0o666, ["writable by this process (uid 65534)", "mode 666"])])
def test_anchors_deployed_read_only_to_the_agent(keys: Keys, file_mode: int,
                                                 expect: list[str]) -> None:
    """Deployed by root, read by the agent's user (nobody): clean unless world-writable."""
    base = Path(tempfile.mkdtemp(prefix="agentguard-trust-"))
    try:
        base.chmod(0o755)
        path = write(base / "trust.yaml", trust_data(keys))
        path.chmod(file_mode)
        lines = warnings_as(65534, path)
        assert len(lines) == len(expect), lines
        for line, fragment in zip(lines, expect, strict=True):
            assert fragment in line
    finally:
        shutil.rmtree(base)
