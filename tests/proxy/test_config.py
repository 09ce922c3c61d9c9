"""Proxy configuration, several upstreams under namespaces, refused name collisions, and the
public base URL of the re-authentication links."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from mcp import StdioServerParameters

from agentguard.errors import ConfigError
from agentguard.proxy.config import (
    ProxyConfig,
    cleartext_url,
    default_server_name,
    load_config,
    parse_listen,
)
from tests.proxy.conftest import (
    GIT_SERVER,
    MODES,
    OPS_SERVER,
    PYTHON,
    ROOT,
    ProxyUnderTest,
)


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "proxy.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_config_file_declares_several_upstreams(tmp_path: Path) -> None:
    path = _write(tmp_path, {
        "policy": "policy.yaml", "store": "sqlite:///state.db", "audit": "audit.jsonl",
        "servers": {"ops": {"command": "python", "args": ["ops.py"], "cwd": "srv"},
                    "wiki": {"url": "http://127.0.0.1:9/mcp", "namespace": "kb"}},
    })
    config = load_config(path)
    assert [s.name for s in config.servers] == ["ops", "wiki"]
    assert config.policy == str(tmp_path / "policy.yaml")
    assert config.store == f"sqlite:///{tmp_path / 'state.db'}"
    assert config.servers[0].cwd == str(tmp_path / "srv")
    assert [config.namespace_of(s) for s in config.servers] == ["ops", "kb"]


@pytest.mark.parametrize(("servers", "message"), [
    ({"a__b": {"command": "x"}}, "no '__'"),
    ({"a": {"command": "x", "url": "http://h/mcp"}}, "exactly one of command or url"),
    ({"a": {}}, "exactly one of command or url"),
    ({"a": {"url": "ftp://h"}}, "http"),
    ({"a": {"command": "x", "namespace": "n"}, "b": {"command": "y", "namespace": "n"}},
     "share namespace"),
    ({"a": {"command": "x", "bogus": 1}}, "xtra"),
])
def test_bad_configs_are_refused_with_the_field_named(tmp_path: Path, servers: dict,
                                                      message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, {"servers": servers}))
    assert message in str(err.value)
    assert "proxy.yaml" in str(err.value)


def test_names_and_listen_addresses() -> None:
    assert default_server_name("/usr/bin/mcp-server-git") == "mcp-server-git"
    assert default_server_name("examples/servers/ops_server.py") == "ops_server"
    assert default_server_name("http://wiki.internal:8080/mcp") == "wiki_internal"
    assert parse_listen("127.0.0.1:8787") == ("127.0.0.1", 8787)
    assert parse_listen("[::1]:9000") == ("::1", 9000)
    with pytest.raises(ValueError):
        parse_listen("8787")


@pytest.mark.parametrize(("url", "kept"), [
    ("https://agentguard.example/", "https://agentguard.example"),
    ("https://agentguard.example/ag//", "https://agentguard.example/ag"),
    ("http://127.0.0.1:8787", "http://127.0.0.1:8787"),
    ("https://[::1]:8443/", "https://[::1]:8443"),
])
def test_the_public_url_is_kept_without_trailing_slashes(url: str, kept: str) -> None:
    assert ProxyConfig(listen="0.0.0.0:8787", public_url=url).public_url == kept


@pytest.mark.parametrize(("url", "message"), [
    ("ftp://agentguard.example", "must start with https://"),
    ("agentguard.example", "must start with https://"),
    ("https://", "must name a host"),
    ("https://:8443/", "must name a host"),
    ("https://agentguard.example/?next=1", "query or fragment"),
    ("https://agentguard.example/#top", "query or fragment"),
    ("https://agentguard.example?", "query or fragment"),
    ("https://user:secret@agentguard.example", "user name or password"),
    ("https://agentguard.example:99999", "out of range"),
    ("https://agentguard.example/a b", "without spaces"),
    ("https://agentguard.example/\x1b[31m", "printable ASCII"),
    ("https://\u0430gentguard.example", "xn--"),  # Cyrillic a: a look-alike host
])
def test_bad_public_urls_are_refused(tmp_path: Path, url: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, {"listen": "127.0.0.1:8787", "public_url": url}))
    assert message in str(err.value)
    assert str(err.value).startswith(f"{tmp_path / 'proxy.yaml'}: public_url: ")


def test_a_public_url_needs_the_http_downstream(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, {"public_url": "https://agentguard.example"}))
    assert "public_url" in str(err.value) and "listen" in str(err.value)
    assert "Value error" not in str(err.value)


@pytest.mark.parametrize(("url", "clear"), [
    ("http://agentguard.example", True),
    ("http://10.0.0.8:8787", True),
    ("http://[2001:db8::1]:8787", True),
    ("HTTP://Agentguard.Example", True),
    ("https://agentguard.example", False),
    ("http://127.0.0.1:8787", False),
    ("http://127.1.2.3:8787", False),
    ("http://[::1]:8787", False),
    ("http://localhost:8787", False),
    ("http://proxy.localhost", False),
])
def test_cleartext_means_http_beyond_loopback(url: str, clear: bool) -> None:
    assert cleartext_url(url) is clear


def _params(proxy: ProxyUnderTest, path: Path) -> StdioServerParameters:
    return StdioServerParameters(command=PYTHON, args=[
        "-m", "agentguard.proxy", "--config", str(path), "--log-level", "WARNING"],
        env=proxy.env(), cwd=str(ROOT))


@pytest.mark.anyio
@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", MODES)
async def test_several_upstreams_are_namespaced_by_server(proxy: ProxyUnderTest,
                                                          tmp_path: Path, git_repo: Path,
                                                          mode: str) -> None:
    path = _write(tmp_path, {
        "policy": str(proxy.policy), "store": proxy.store_url, "audit": str(proxy.audit),
        "servers": {"ops": {"command": PYTHON, "args": [OPS_SERVER]},
                    "git": {"command": GIT_SERVER, "args": ["--repository", str(git_repo)]}},
    })
    async with proxy.client(_params(proxy, path), mode) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"ops__get_status", "ops__delete_file", "git__git_status"} <= names
        assert not any("__" not in n for n in names)
        result = await client.call_tool("ops__get_status", {"service": "api"})
        assert result.content[0].text.startswith("api: running")
        result = await client.call_tool("git__git_status", {"repo_path": str(git_repo)})
        assert "README.md" in result.content[0].text
        prompts = {p.name for p in (await client.list_prompts()).prompts}
        assert "ops__incident_report" in prompts
        prompt = await client.get_prompt("ops__incident_report", {"service": "api"})
        assert "api" in prompt.messages[0].content.text


@pytest.mark.timeout(90)
def test_a_name_collision_is_refused_never_shadowed(proxy: ProxyUnderTest,
                                                    tmp_path: Path) -> None:
    path = _write(tmp_path, {
        "policy": str(proxy.policy), "store": proxy.store_url, "audit": str(proxy.audit),
        "servers": {"ops": {"command": PYTHON, "args": [OPS_SERVER], "namespace": ""},
                    "ops-copy": {"command": PYTHON, "args": [OPS_SERVER], "namespace": ""}},
    })
    done = subprocess.run([PYTHON, *_params(proxy, path).args], env=proxy.env(),
                          cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "name collision: 'get_status' is claimed by ops-copy/get_status, ops/get_status" \
        in done.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("args", "message"), [
    (["--upstream-url", "http://127.0.0.1:9/mcp", "--", "python", "x.py"], "not both"),
    ([], "nothing to proxy"),
    (["--", "/nonexistent/mcp-server"], "could not be started"),
    (["--public-url", "https://agentguard.example", "--", "python", "x.py"],
     "public_url: the re-authentication pages are served by the HTTP downstream"),
    (["--listen", "127.0.0.1:9", "--public-url", "agentguard.example:8443", "--", "python",
      "x.py"], "public_url: 'agentguard.example:8443' must start with https://"),
])
def test_cli_mistakes_exit_with_a_clear_error(proxy: ProxyUnderTest, args: list[str],
                                              message: str) -> None:
    done = subprocess.run([PYTHON, "-m", "agentguard.proxy", "--policy", str(proxy.policy),
                           "--store", proxy.store_url, "--audit", str(proxy.audit), *args],
                          env=proxy.env(), cwd=ROOT, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=50)
    assert done.returncode == 2
    assert message in done.stderr


@pytest.mark.timeout(60)
def test_the_help_explains_the_public_url() -> None:
    done = subprocess.run([PYTHON, "-m", "agentguard.proxy", "--help"], cwd=ROOT,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=50, env={"COLUMNS": "200", "PATH": ""})
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "--public-url" in text and "reverse proxy" in text and "Needs --listen" in text


@pytest.mark.parametrize(("extra", "message"), [
    ({"listen": "127.0.0.1:8787", "trusted_proxies": ["not-an-ip"]}, "not an IP address"),
    ({"trusted_proxies": ["127.0.0.1"]}, "listen"),
])
def test_trusted_proxies_are_addresses_on_the_http_downstream(tmp_path: Path, extra: dict,
                                                              message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, extra))
    assert "trusted_proxies" in str(err.value) and message in str(err.value)
    ok = load_config(_write(tmp_path, {"listen": "127.0.0.1:8787",
                                       "trusted_proxies": ["10.0.0.0/8", "::1"]}))
    assert ok.trusted_proxies == ["10.0.0.0/8", "::1"]
