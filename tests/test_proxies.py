"""Proxies: which one a request takes (pure), and runs through a real proxy (proxy.py) that the
tests start, counting what it forwarded against what the emulator served."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.request import getproxies_environment

import orjson
import pytest
from yarl import URL

import asyncdl
from asyncdl import FetchOptions, UsageError
from asyncdl.proxies import Proxies, direct, proxy_url

from .conftest import PROXY_VARIABLES, SEED_ID, command, server_args
from .proxy_recorder import LOG_VARIABLE

ROOT = Path(__file__).resolve().parents[1]
#: Few targets, so that each run is quick.
RANGE = (0.1, 0.11)
OPTIONS = FetchOptions(density_range=RANGE, concurrency=8)
#: A port nothing listens on: a proxy there fails every request that goes to it.
NOWHERE = "http://127.0.0.1:9"


# -- which proxy (pure) ------------------------------------------------------------------------------


def test_each_scheme_takes_its_own_variable():
    proxies = Proxies.choose(None, {"http": "http://plain:3128", "https": "secure:3129"})
    assert proxies.for_url(URL("http://api.brain-map.org/x")) == URL("http://plain:3128")
    assert proxies.for_url(URL("https://api.brain-map.org/x")) == URL("http://secure:3129")
    assert Proxies.choose(None, {"http": "http://plain:3128"}).for_url(URL("https://h/")) is None
    assert Proxies.choose(None, {}).for_url(URL("http://h/")) is None


def test_proxy_option_wins_over_the_environment_and_empty_means_none():
    environment = {"http": "http://env:1", "https": "http://env:2", "no": "direct.org"}
    chosen = Proxies.choose("http://mine:3128", environment)
    for url in ("http://a.org/", "https://a.org/"):
        assert chosen.for_url(URL(url)) == URL("http://mine:3128")
    assert chosen.for_url(URL("https://direct.org/")) is None  # NO_PROXY still holds, as in curl
    assert Proxies.choose("", environment).for_url(URL("https://a.org/")) is None


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "bypassed"),
    [
        ("*", "api.brain-map.org", 443, True),
        ("brain-map.org", "api.brain-map.org", 443, True),
        ("brain-map.org", "brain-map.org", 443, True),
        (".brain-map.org", "api.brain-map.org", 443, True),
        ("brain-map.org", "notbrain-map.org", 443, False),
        ("localhost, 127.0.0.1", "127.0.0.1", 8000, True),
        ("127.0.0.1:8000", "127.0.0.1", 8000, True),
        ("127.0.0.1:8000", "127.0.0.1", 8001, False),
        ("10.0.0.0/8,192.168.0.0/16", "10.1.2.3", 80, True),
        ("10.0.0.0/8", "11.1.2.3", 80, False),
        ("[::1]", "::1", 80, True),
        ("", "127.0.0.1", 80, False),
        ("API.Brain-Map.org", "api.brain-map.org", 443, True),
    ],
)
def test_no_proxy_entries(no_proxy, host, port, bypassed):
    assert direct(host, port, no_proxy) is bypassed


def test_proxy_urls_are_plain_http_with_a_host():
    assert proxy_url("proxy.example.org:3128", "--proxy") == URL("http://proxy.example.org:3128")
    assert proxy_url("http://u:p@proxy:3128", "--proxy").user == "u"
    with pytest.raises(UsageError, match=r"HTTPS_PROXY=https://proxy:3128: .* not in https"):
        proxy_url("https://proxy:3128", "HTTPS_PROXY")
    with pytest.raises(UsageError, match="not in socks5"):
        proxy_url("socks5://proxy:1080", "--proxy")
    for hostless in ("http://:3128", "http://"):
        with pytest.raises(UsageError, match=r"--proxy: not a proxy URL|needs a host"):
            proxy_url(hostless, "--proxy")
    with pytest.raises(UsageError) as err:  # a password is never repeated in an error
        proxy_url("https://user:secret@proxy:3128", "HTTPS_PROXY")
    assert "secret" not in str(err.value) and "user:***@proxy" in str(err.value)
    with pytest.raises(UsageError, match="--proxy"):
        FetchOptions(proxy="ftp://proxy")


def test_the_environment_is_read_as_urllib_reads_it(monkeypatch):
    # Either case; the lower-case name wins when both are set.
    monkeypatch.setenv("HTTPS_PROXY", "http://upper:1")
    monkeypatch.setenv("NO_PROXY", "direct.org")
    proxies = Proxies.choose(None, getproxies_environment())
    assert proxies.for_url(URL("https://a.org/")) == URL("http://upper:1")
    assert proxies.for_url(URL("https://direct.org/")) is None
    monkeypatch.setenv("https_proxy", "http://lower:2")
    assert Proxies.choose(None, getproxies_environment()).for_url(URL("https://a.org/")) == URL(
        "http://lower:2"
    )


# -- through a real proxy -----------------------------------------------------------------------------


class ProxyProcess:
    """proxy.py on a loopback port, recording what it forwards (``tests.proxy_recorder``)."""

    def __init__(self, workdir: Path, *args: str) -> None:
        self.log = workdir / "forwarded.log"
        self.log.touch()
        port_file = workdir / "port"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "proxy",
                "--hostname",
                "127.0.0.1",
                "--port",
                "0",
                "--port-file",
                str(port_file),
                "--num-workers",
                "1",
                "--num-acceptors",
                "1",
                "--plugins",
                "tests.proxy_recorder.Recorder",
                *args,
            ],
            cwd=ROOT,
            env={**os.environ, LOG_VARIABLE: str(self.log)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its workers too are stopped with it, as a group
        )
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            assert self.process.poll() is None, "proxy.py exited at start"
            assert time.monotonic() < deadline, "proxy.py did not start within 60 s"
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{int(port_file.read_text())}"

    def forwarded(self) -> list[str]:
        """What it forwarded since the last ``reset``: ``CONNECT host:port`` or ``GET URL``."""
        return self.log.read_text().splitlines()

    def reset(self) -> None:
        self.log.write_text("")

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)


@pytest.fixture(scope="module")
def proxy_server(tmp_path_factory) -> Iterator[ProxyProcess]:
    proxy = ProxyProcess(tmp_path_factory.mktemp("proxy"))
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def proxy(proxy_server):
    """The module's proxy with its record emptied for this test."""
    proxy_server.reset()
    return proxy_server


@pytest.fixture(scope="module")
def direct_data(emulator_server, tmp_path_factory):
    """data.json of the seed's data set fetched without a proxy, to compare the others with."""
    out = tmp_path_factory.mktemp("direct")
    asyncdl.fetch_sync([SEED_ID], out, options=OPTIONS, endpoints=emulator_server.endpoints)
    return (out / str(SEED_ID) / "data.json").read_bytes()


def host_port(emu):
    return f"127.0.0.1:{emu.port}"


def served(emu):
    return sum(emu.stats.requests.values())


def data_json(out):
    return (out / str(SEED_ID) / "data.json").read_bytes()


async def test_http_proxy_from_the_environment_carries_every_request(
    proxy, emulator, direct_data, tmp_path, monkeypatch
):
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("HTTPS_PROXY", NOWHERE)  # the other scheme's proxy is not used for http
    [result] = await asyncdl.fetch(
        [SEED_ID], tmp_path, options=OPTIONS, endpoints=emulator.endpoints
    )
    assert result.complete and data_json(tmp_path) == direct_data
    # Every request the server answered was forwarded by the proxy, and nothing else was.
    forwarded = proxy.forwarded()
    prefix = f"GET http://{host_port(emulator)}"
    assert all(line.startswith(prefix) for line in forwarded)
    assert sorted(line.removeprefix(prefix) for line in forwarded) == sorted(
        target for target, _ in emulator.stats.wire or []
    )
    assert len(forwarded) == served(emulator) == result.requests


async def test_https_goes_through_the_proxy_in_tunnels(
    proxy, https, direct_data, tmp_path, monkeypatch
):
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("HTTP_PROXY", NOWHERE)
    options = FetchOptions(density_range=RANGE, concurrency=8, ca_bundle=https.ca_file)
    [result] = await asyncdl.fetch([SEED_ID], tmp_path, options=options, endpoints=https.endpoints)
    assert result.complete and data_json(tmp_path) == direct_data
    # The proxy sees only the CONNECT of each tunnel; the server, one TLS handshake per
    # connection. As many tunnels as handshakes: every connection went through the proxy.
    forwarded = proxy.forwarded()
    assert forwarded == [f"CONNECT {host_port(https)}"] * len(forwarded)
    assert 1 <= len(forwarded) == https.stats.tls_handshakes
    assert served(https) == result.requests


async def test_no_proxy_hosts_are_reached_directly(proxy, emulator, tmp_path, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    [result] = await asyncdl.fetch(
        [SEED_ID], tmp_path, options=OPTIONS, endpoints=emulator.endpoints
    )
    assert result.complete and served(emulator) == result.requests
    assert proxy.forwarded() == []
    # The option is bound by NO_PROXY too (as curl's --proxy is).
    options = FetchOptions(density_range=RANGE, proxy=proxy.url, restart=True)
    await asyncdl.fetch([SEED_ID], tmp_path, options=options, endpoints=emulator.endpoints)
    assert proxy.forwarded() == []


def run(*args, env):
    """``python -m asyncdl ARGS`` with the proxy variables of ``env`` and no others."""
    environ = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARIABLES}
    return subprocess.run(
        command(*args),
        capture_output=True,
        text=True,
        timeout=300,
        env={**environ, "PYTHONWARNINGS": "error", **env},
    )


def test_cli_proxy_option_overrides_the_environment(proxy, https, direct_data, tmp_path):
    # The environment names a proxy where there is none: the run works only if --proxy wins.
    env = {"HTTPS_PROXY": NOWHERE, "HTTP_PROXY": NOWHERE}
    proc = run(
        "fetch",
        SEED_ID,
        "-o",
        tmp_path,
        "--density-range",
        *map(str, RANGE),
        "--ca-bundle",
        https.ca_file,
        "--proxy",
        proxy.url,
        *server_args(https),
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert data_json(tmp_path) == direct_data
    assert 1 <= len(proxy.forwarded()) == https.stats.tls_handshakes


def test_cli_list_through_the_proxy_of_the_environment(proxy, emulator):
    proc = run(
        "list",
        "--injection-structure",
        "VISp",
        *server_args(emulator),
        env={"http_proxy": proxy.url},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].split()[:2] == ["id", "structure"]
    assert len(proxy.forwarded()) == served(emulator) >= 2  # the tree, then the search


def test_cli_an_unusable_proxy_setting_is_one_line_and_exit_2(tmp_path, emulator):
    for args, env, words in [
        (["--proxy", "socks5://127.0.0.1:1080"], {}, "--proxy=socks5://127.0.0.1:1080"),
        ([], {"HTTPS_PROXY": "https://127.0.0.1:3128"}, "HTTPS_PROXY=https://127.0.0.1:3128"),
    ]:
        proc = run("fetch", SEED_ID, "-o", tmp_path, *args, *server_args(emulator), env=env)
        assert proc.returncode == 2, proc.stderr
        [line] = proc.stderr.strip().splitlines()
        assert line.startswith(f"asyncdl: error: {words}: asyncdl speaks to proxies in plain http")
    assert served(emulator) == 0


@pytest.fixture(scope="module")
def guarded_proxy(tmp_path_factory) -> Iterator[ProxyProcess]:
    """A proxy that wants a user name and password (HTTP 407 without them)."""
    proxy = ProxyProcess(tmp_path_factory.mktemp("guarded"), "--basic-auth", "neuro:s3cret")
    try:
        yield proxy
    finally:
        proxy.stop()


async def test_a_proxy_that_wants_credentials_gets_those_of_its_url(
    guarded_proxy, https, tmp_path, monkeypatch
):
    with_credentials = guarded_proxy.url.replace("http://", "http://neuro:s3cret@")
    monkeypatch.setenv("HTTPS_PROXY", with_credentials)
    options = FetchOptions(density_range=RANGE, concurrency=4, ca_bundle=https.ca_file)
    [result] = await asyncdl.fetch([SEED_ID], tmp_path, options=options, endpoints=https.endpoints)
    assert result.complete
    assert 1 <= len(guarded_proxy.forwarded()) == https.stats.tls_handshakes
    # Without them the proxy refuses the tunnel, and the data set fails saying so.
    https.stats.reset()
    monkeypatch.setenv("HTTPS_PROXY", guarded_proxy.url)
    [result] = await asyncdl.fetch(
        [SEED_ID], tmp_path / "b", options=options, endpoints=https.endpoints
    )
    assert not result.complete and "407" in (result.error or "")
    assert https.stats.tls_handshakes == 0 and served(https) == 0
    summary = orjson.loads((tmp_path / "b" / str(SEED_ID) / "summary.json").read_bytes())
    assert summary["complete"] is False
