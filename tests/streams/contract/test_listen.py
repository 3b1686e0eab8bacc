"""MARQUEE_BIND_HOST: one variable, loopback by default, read by every listening component."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serve.config import ServeSettings
from streams.contract.listen import ListenSettings, address, is_loopback, reachable
from streams.flow import FlowSettings


def test_every_listener_reads_one_variable_and_defaults_to_loopback(monkeypatch) -> None:
    monkeypatch.delenv("MARQUEE_BIND_HOST", raising=False)
    assert {FlowSettings().bind_host, ServeSettings().host, ListenSettings().bind_host} \
        == {"127.0.0.1"}
    monkeypatch.setenv("MARQUEE_BIND_HOST", "0.0.0.0")
    assert {FlowSettings().bind_host, ServeSettings().host, ListenSettings().bind_host} \
        == {"0.0.0.0"}


def test_a_host_name_is_refused_with_the_choices(monkeypatch) -> None:
    monkeypatch.setenv("MARQUEE_BIND_HOST", "localhost")
    with pytest.raises(ValidationError, match="127.0.0.1 .this host only., 0.0.0.0"):
        ServeSettings()


def test_clients_dial_loopback_for_a_wildcard_and_bracket_ipv6() -> None:
    assert reachable("0.0.0.0") == "127.0.0.1"
    assert reachable("::") == "127.0.0.1"
    assert reachable("10.0.0.5") == "10.0.0.5"
    assert address("::1", 9090) == "[::1]:9090"
    assert address("127.0.0.1", 9090) == "127.0.0.1:9090"
    assert is_loopback("127.0.0.2") and is_loopback("::1") and not is_loopback("0.0.0.0")
