"""The capacity benchmark's command line: which servers, at which latency (pure)."""

from __future__ import annotations

import pytest

from benchmarks.capacity.settings import Server, Settings, parse_args


def test_servers_and_latency_from_the_command_line():
    settings = parse_args(["--servers", "256", "16:8", "--latency-ms", "200"])
    assert settings.servers == (Server(256), Server(16, 8))
    assert settings.latency_s == pytest.approx(0.2)
    assert parse_args([]).servers == Settings().servers


def test_a_server_that_is_not_k_or_k_colon_q_is_refused(capsys):
    with pytest.raises(SystemExit) as exit:
        parse_args(["--servers", "16:many"])
    assert exit.value.code == 2
    assert "K or K:Q, two whole numbers; got '16:many'" in capsys.readouterr().err
