"""https: the emulator serving TLS, asyncdl verifying it, and refusing what does not verify."""

import asyncio
import shutil
import ssl
import subprocess
import sys
import urllib.request
from typing import Any

import orjson
import pytest

import asyncdl
from asyncdl import CertificateError, FetchOptions, TLSError, UsageError
from asyncdl.emulator import Emulator, FaultPlan, make_certificates
from asyncdl.fetcher import HttpClient, Tally, tls_context
from asyncdl.responses import rows

from .conftest import SEED_ID, EmulatorProcess, EmulatorThread, Recorder, run_cli, server_args

#: Few targets, so each run is quick; the same for every run compared here.
RANGE = ("0.1", "0.11")
OPTIONS: dict[str, Any] = {"density_range": (0.1, 0.11), "concurrency": 8}


@pytest.fixture(autouse=True)
def no_ca_from_the_environment(monkeypatch):
    """'Without the CA' must mean it: no SSL_CERT_FILE/SSL_CERT_DIR leaking in from outside."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


@pytest.fixture(scope="module")
def over_http(emulator_server, tmp_path_factory):
    """data.json of the seed's data set fetched over plain http, to compare https runs with."""
    out = tmp_path_factory.mktemp("http")
    asyncdl.fetch_sync(
        [SEED_ID], out, options=FetchOptions(**OPTIONS), endpoints=emulator_server.endpoints
    )
    return (out / str(SEED_ID) / "data.json").read_bytes()


def one_error_line(stderr):
    """The one line of the error (a fetch has said first, on its own line, that it is starting)."""
    lines = stderr.strip().splitlines()
    if lines and lines[0].startswith("asyncdl: starting "):
        lines = lines[1:]
    assert len(lines) == 1 and lines[0].startswith("asyncdl: error: "), stderr
    return lines[0]


def host_of(emu):
    return f"127.0.0.1:{emu.port}"


# -- with the CA: the same data as over http ---------------------------------------------------------


async def test_fetch_over_https_with_the_ca_equals_http(https, over_http, tmp_path):
    assert https.base_url.startswith("https://")
    options = FetchOptions(**OPTIONS, ca_bundle=https.ca_file)
    [result] = await asyncdl.fetch([SEED_ID], tmp_path, options=options, endpoints=https.endpoints)
    assert result.complete and result.retries == 0
    assert (tmp_path / str(SEED_ID) / "data.json").read_bytes() == over_http
    # It really went over TLS: the server answered every request, through TLS connections.
    assert sum(https.stats.requests.values()) == result.requests
    assert https.stats.tls_handshakes >= 1


def rehashed_directory(ca_file, directory):
    """An OpenSSL CA directory (``<subject hash>.0``) holding ``ca_file``, as SSL_CERT_DIR wants."""
    subject_hash = subprocess.run(
        ["openssl", "x509", "-hash", "-noout", "-in", ca_file],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    directory.mkdir()
    shutil.copy(ca_file, directory / f"{subject_hash}.0")
    return directory


@pytest.mark.parametrize("how", ["--ca-bundle", "SSL_CERT_FILE", "SSL_CERT_DIR"])
def test_cli_fetch_over_https_trusts_the_ca_it_is_given(https, over_http, tmp_path, how):
    args, env = [], {}
    if how == "--ca-bundle":
        args = ["--ca-bundle", https.ca_file]
    elif how == "SSL_CERT_FILE":
        env = {"SSL_CERT_FILE": str(https.ca_file)}
    else:
        if shutil.which("openssl") is None:
            pytest.skip("needs the openssl command to hash a CA directory")
        env = {"SSL_CERT_DIR": str(rehashed_directory(https.ca_file, tmp_path / "certs"))}
    out = tmp_path / "out"
    proc = run_cli(
        "fetch", SEED_ID, "-o", out, "--density-range", *RANGE, *server_args(https), *args, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert (out / str(SEED_ID) / "data.json").read_bytes() == over_http
    assert https.stats.tls_handshakes >= 1


def test_default_context_reads_ssl_cert_file(https, monkeypatch):
    # Python's default context trusts SSL_CERT_FILE through OpenSSL's default verify paths,
    # read when the context is made; --ca-bundle replaces the system's CAs instead of adding.
    def organisations(context):
        return [
            value
            for cert in context.get_ca_certs()
            for rdn in cert["subject"]
            for key, value in rdn
            if key == "organizationName"
        ]

    assert "asyncdl emulator" not in organisations(tls_context(None))
    monkeypatch.setenv("SSL_CERT_FILE", str(https.ca_file))
    assert "asyncdl emulator" in organisations(tls_context(None))
    assert organisations(tls_context(https.ca_file)) == ["asyncdl emulator"]


# -- without it: one line, exit 4, no retries ------------------------------------------------------


async def test_an_untrusted_certificate_is_one_attempt_and_no_retry(https):
    tally = Tally()
    async with HttpClient(FetchOptions(retries=5, backoff_base=0, backoff_max=0)) as client:
        with pytest.raises(CertificateError) as err:
            await client.get_json(https.endpoints.structure_graph(), tally, rows)
    assert err.value.host == host_of(https)
    assert "did not verify" in str(err.value) and "--ca-bundle" in str(err.value)
    assert "unable to get local issuer certificate" in str(err.value)
    assert (tally.requests, tally.retries) == (1, 0)
    assert https.stats.tls_handshakes == 1
    assert sum(https.stats.requests.values()) == 0


async def test_fetch_stops_at_the_first_untrusted_certificate(https, tmp_path):
    events = Recorder()
    options = FetchOptions(**OPTIONS, retries=5, backoff_base=0, backoff_max=0)
    with pytest.raises(CertificateError) as err:  # itself, not an ExceptionGroup
        await asyncdl.fetch(
            [SEED_ID, 100141219],
            tmp_path,
            options=options,
            endpoints=https.endpoints,
            events=events,
        )
    assert err.value.host == host_of(https)
    assert events.retries == [] and events.done == []  # no data set failed one by one
    assert not list(tmp_path.glob("*/summary.json"))
    # One handshake: the first request to the server goes alone, and its failure is the others'.
    assert https.stats.tls_handshakes == 1
    assert sum(https.stats.requests.values()) == 0


async def test_an_untrusted_certificate_on_the_targets_stops_the_run(https, tmp_path):
    # Volumes already cached (fetched with the CA): the first requests without it are targets.
    cache = tmp_path / "cache"
    trusted = FetchOptions(**OPTIONS, volumes="legacy", ca_bundle=https.ca_file)
    await asyncdl.fetch(
        [SEED_ID], tmp_path / "a", options=trusted, endpoints=https.endpoints, cache_dir=cache
    )
    https.stats.reset()
    options = FetchOptions(**OPTIONS, volumes="legacy", retries=5, backoff_base=0, backoff_max=0)
    events = Recorder()
    with pytest.raises(CertificateError):
        await asyncdl.fetch(
            [SEED_ID],
            tmp_path / "b",
            options=options,
            endpoints=https.endpoints,
            cache_dir=cache,
            events=events,
        )
    assert events.retries == [] and events.done == []
    assert not (tmp_path / "b" / str(SEED_ID) / "failures.ndjson").exists()
    assert https.stats.tls_handshakes == 1  # not one per lane
    assert sum(https.stats.requests.values()) == 0


async def test_requests_at_once_to_an_untrusted_server_make_one_handshake(https):
    """The first request to an https server goes alone; the others fail with its TLSError, each
    naming its own URL, without connecting (nor being cancelled mid-handshake)."""
    url = https.base_url + "/api/v2/structure_graph_download/1.json?n={}"
    options = FetchOptions(concurrency=16, retries=5, backoff_base=0, backoff_max=0)
    async with HttpClient(options) as client:
        outcomes = await asyncio.gather(
            *(client.get_json(url.format(n), Tally(), rows) for n in range(16)),
            return_exceptions=True,
        )
    refused = [o for o in outcomes if isinstance(o, CertificateError)]
    assert len(refused) == 16, outcomes
    assert [e.url for e in refused] == [url.format(n) for n in range(16)]
    assert len({str(e) for e in refused}) == 1
    assert https.stats.tls_handshakes == 1 and sum(https.stats.requests.values()) == 0


async def test_requests_at_once_to_a_trusted_server_all_connect(https):
    url = https.base_url + "/api/v2/structure_graph_download/1.json?n={}"
    options = FetchOptions(concurrency=16, ca_bundle=https.ca_file)
    async with HttpClient(options) as client:
        answers = await asyncio.gather(
            *(client.get_json(url.format(n), Tally(), rows) for n in range(16))
        )
    assert all(answers) and sum(https.stats.requests.values()) == 16
    assert https.stats.tls_handshakes > 1  # once the first answered, the rest went at once


async def test_a_request_waiting_for_a_first_contact_holds_no_slot(emulator):
    """With -c 2, the first request to a slow https server holds one slot and a second request
    to it waits for its answer without holding the other: a request to another host goes at once."""
    done: list[str] = []
    with EmulatorThread(tls=True, latency_ms=600, latency_spread=0) as slow:
        url = slow.base_url + "/api/v2/structure_graph_download/1.json?n={}"
        options = FetchOptions(concurrency=2, ca_bundle=slow.ca_file)

        async def get(name: str, target: str) -> None:
            await client.get_json(target, Tally(), rows)
            done.append(name)

        async with HttpClient(options) as client:
            elsewhere = emulator.base_url + "/api/v2/structure_graph_download/1.json"
            await asyncio.gather(
                get("first", url.format(1)), get("waiting", url.format(2)), get("other", elsewhere)
            )
    assert done[0] == "other", done  # before the slow server's first answer, not after it
    assert sorted(done) == ["first", "other", "waiting"]


async def test_dry_run_stops_at_an_untrusted_certificate(https, tmp_path):
    with pytest.raises(CertificateError):
        await asyncdl.survey([SEED_ID, 100141219], endpoints=https.endpoints, cache_dir=tmp_path)


def test_cli_fetch_without_the_ca_exits_4_with_one_line(https, tmp_path):
    proc = run_cli("fetch", SEED_ID, 100141219, "-o", tmp_path, *server_args(https), "--retries", 5)
    assert proc.returncode == 4
    line = one_error_line(proc.stderr)
    assert f"the TLS certificate of {host_of(https)} did not verify" in line
    assert "--ca-bundle" in line and "SSL_CERT_FILE" in line
    assert 1 <= https.stats.tls_handshakes <= 6 and sum(https.stats.requests.values()) == 0


def test_cli_list_without_the_ca_exits_4_with_one_line(https):
    proc = run_cli("list", "--injection-structure", "VISp", *server_args(https))
    assert proc.returncode == 4 and proc.stdout == ""
    assert f"the TLS certificate of {host_of(https)} did not verify" in one_error_line(proc.stderr)
    assert https.stats.tls_handshakes == 1  # the first page, once


# -- an https URL for a plain http server: the same, at once ------------------------------------------


def as_https(emu):
    return emu.base_url.replace("http://", "https://", 1)


async def test_a_server_that_does_not_speak_tls_is_one_attempt_and_no_retry(emulator, tmp_path):
    url = as_https(emulator) + "/api/v2/structure_graph_download/1.json"
    tally = Tally()
    async with HttpClient(FetchOptions(retries=5, backoff_base=0, backoff_max=0)) as client:
        with pytest.raises(TLSError) as err:
            await client.get_json(url, tally, rows)
    assert not isinstance(err.value, CertificateError) and err.value.host == host_of(emulator)
    assert f"give its URL as http://{host_of(emulator)}" in str(err.value)
    assert (tally.requests, tally.retries) == (1, 0)
    assert sum(emulator.stats.requests.values()) == 0  # the server saw a handshake, not a GET
    endpoints = asyncdl.Endpoints(as_https(emulator), as_https(emulator))
    options = FetchOptions(**OPTIONS, retries=5, backoff_base=0, backoff_max=0)
    with pytest.raises(TLSError):  # the run stops, rather than failing data set by data set
        await asyncdl.fetch([SEED_ID, 100141219], tmp_path, options=options, endpoints=endpoints)
    assert not list(tmp_path.glob("*/summary.json"))


def test_cli_fetch_at_https_of_a_plain_server_exits_4_with_one_line(emulator, tmp_path):
    server = ["--base-url", as_https(emulator), "--archive-url", as_https(emulator)]
    proc = run_cli("fetch", SEED_ID, "-o", tmp_path, *server, "--retries", 5)
    assert proc.returncode == 4
    assert f"{host_of(emulator)} does not speak TLS" in one_error_line(proc.stderr)
    assert sum(emulator.stats.requests.values()) == 0


def test_cli_list_with_the_ca(https):
    proc = run_cli(
        "list", "--injection-structure", "VISp", *server_args(https), "--ca-bundle", https.ca_file
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].split()[:2] == ["id", "structure"]


# -- a redirect from https to plain http: the same, before connecting to it ---------------------------


@pytest.fixture(scope="module")
def downgrading(emulator_server):
    """An https emulator that redirects every request to plain http on another host: the shared
    emulator, named ``localhost``."""
    plan = FaultPlan(redirect=f"http://localhost:{emulator_server.port}")
    with EmulatorThread(tls=True, faults=plan) as emu:
        yield emu


async def test_a_redirect_from_https_to_plain_http_stops_the_run(downgrading, emulator, tmp_path):
    options = FetchOptions(
        **OPTIONS, ca_bundle=downgrading.ca_file, retries=5, backoff_base=0, backoff_max=0
    )
    events = Recorder()
    downgrading.stats.reset()
    with pytest.raises(TLSError) as err:  # itself, not an ExceptionGroup
        await asyncdl.fetch(
            [SEED_ID, 100141219],
            tmp_path,
            options=options,
            endpoints=downgrading.endpoints,
            events=events,
        )
    message = str(err.value)
    assert f"{downgrading.base_url}/" in message and f"http://localhost:{emulator.port}/" in message
    assert err.value.host == host_of(downgrading)
    assert events.retries == [] and events.done == [] and events.of("redirected") == []
    assert sum(emulator.stats.requests.values()) == 0  # plain http was never spoken
    # The first request went alone; the others failed with its error without connecting.
    assert downgrading.stats.tls_handshakes == 1
    assert sum(downgrading.stats.requests.values()) == 1
    assert not list(tmp_path.glob("*/summary.json"))


def test_cli_redirect_to_plain_http_exits_4_with_one_line_naming_both_urls(
    downgrading, emulator, tmp_path
):
    proc = run_cli(
        "fetch", SEED_ID, "-o", tmp_path, *server_args(downgrading),
        "--ca-bundle", downgrading.ca_file, "--retries", 5,
    )  # fmt: skip
    assert proc.returncode == 4, proc.stderr
    line = one_error_line(proc.stderr)
    assert f"{downgrading.base_url}/" in line and f"http://localhost:{emulator.port}/" in line
    assert sum(emulator.stats.requests.values()) == 0


# -- certificates that are wrong even with the right CA ---------------------------------------------


@pytest.mark.parametrize(
    ("certificates", "reason"),
    [
        (lambda: make_certificates(["example.org"]), "IP address mismatch"),
        (lambda: make_certificates(expired=True), "certificate has expired"),
    ],
    ids=["wrong-host", "expired"],
)
async def test_a_wrong_host_or_expired_certificate_is_refused(certificates, reason):
    async with Emulator(tls=certificates()) as emu:
        options = FetchOptions(retries=3, backoff_base=0, ca_bundle=emu.ca_file)
        tally = Tally()
        async with HttpClient(options) as client:
            with pytest.raises(CertificateError, match=reason):
                await client.get_json(emu.endpoints.structure_graph(), tally, rows)
        assert tally.retries == 0 and emu.stats.tls_handshakes == 1


# -- bad CA bundles, and the emulator's side ---------------------------------------------------------


def test_a_bad_ca_bundle_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match=r"cannot read CA bundle .*No such file"):
        tls_context(tmp_path / "missing.pem")
    with pytest.raises(UsageError, match=r"cannot read CA bundle .*Is a directory"):
        tls_context(tmp_path)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(UsageError, match="holds no PEM certificate"):
        tls_context(garbage)


@pytest.mark.parametrize(
    "cmd", [["fetch", SEED_ID, "-o", "out"], ["list", "--injection-structure", "VISp"]]
)
def test_cli_bad_ca_bundle_is_one_line_and_exit_2(tmp_path, cmd):
    proc = run_cli(*cmd, "--ca-bundle", tmp_path / "missing.pem", cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert "cannot read CA bundle" in one_error_line(proc.stderr)


def test_help_states_the_https_defaults_and_the_exit_code():
    proc = run_cli("fetch", "--help")
    assert "https://api.brain-map.org" in proc.stdout
    assert "https://download.alleninstitute.org" in proc.stdout
    assert "--ca-bundle" in proc.stdout and "4    the server's TLS certificate" in proc.stdout
    assert "4    the server's TLS certificate" in run_cli("list", "--help").stdout


def test_emulate_tls_prints_its_ca_and_serves_https():
    with EmulatorProcess("--tls") as emu:
        listening, ca_line = emu.output().splitlines()[:2]
        assert listening.startswith("asyncdl emulator listening on https://127.0.0.1:"), listening
        assert ca_line.startswith("asyncdl emulator's CA certificate: ")
        assert emu.ca_file is not None and str(emu.ca_file) == ca_line.split()[4]
        context = ssl.create_default_context(cafile=emu.ca_file)
        with urllib.request.urlopen(
            f"{emu.base_url}/api/v2/structure_graph_download/1.json", context=context, timeout=60
        ) as resp:
            assert orjson.loads(resp.read())["success"] is True
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(emu.base_url, context=ssl.create_default_context(), timeout=60)
        assert emu.stop() == 0  # SIGINT, as a Ctrl-C
        assert "Traceback" not in emu.output()
        assert not emu.ca_file.exists()  # made for this run, removed with it


def test_emulate_tls_without_trustme_names_the_extra(tmp_path):
    # trustme hidden from the import system, as when the extra is not installed.
    code = (
        "import sys; sys.modules['trustme'] = None; from asyncdl.cli import main; "
        "sys.exit(main(['emulate', '--tls', '--port', '0']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "asyncdl[emulator-tls]" in one_error_line(proc.stderr)
