"""Where every socket Marquee listens on binds: one setting, ``MARQUEE_BIND_HOST``.

Loopback by default, so a laptop or a shared host exposes nothing; a deployment that puts
an authenticating proxy in front opens up on purpose (README, "Exposing Marquee").
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

from pydantic import AfterValidator, AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.contract.settings import ENV_FILE

LOOPBACK = "127.0.0.1"
BIND_HOST_VARIABLE = "MARQUEE_BIND_HOST"
BIND_HOST_HELP = ("address every port Marquee opens listens on (service, flow metrics, "
                  "Prometheus, Ray); 0.0.0.0 = every interface")


def check_bind_host(host: str) -> str:
    """``host`` if it is an IP address; else a ValueError naming the choices."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{BIND_HOST_VARIABLE}={host!r} is not an IP address; use 127.0.0.1 "
                         "(this host only), 0.0.0.0 (every interface) or one of this host's "
                         "addresses") from None
    return host


BindHost = Annotated[str, AfterValidator(check_bind_host)]


def bind_host_field(name: str) -> Any:
    """A settings field named ``name`` read from ``MARQUEE_BIND_HOST`` (one variable for
    every component that listens).
    """
    return Field(LOOPBACK, validation_alias=AliasChoices(BIND_HOST_VARIABLE, name),
                 description=BIND_HOST_HELP)


def is_loopback(host: str) -> bool:
    """True when ``host`` is reachable from this machine only."""
    return ipaddress.ip_address(host).is_loopback


def is_wildcard(host: str) -> bool:
    """True for 0.0.0.0 and ``::`` (every interface)."""
    return ipaddress.ip_address(host).is_unspecified


def reachable(host: str) -> str:
    """The address a local client dials to reach a server bound to ``host``."""
    return LOOPBACK if is_wildcard(host) else host


def address(host: str, port: int) -> str:
    """``host:port``, an IPv6 host in brackets (URLs, Prometheus targets, listen flags)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ListenSettings(BaseSettings):
    """The bind address alone, for the tools that start listeners (``marquee up``)."""

    model_config = SettingsConfigDict(env_prefix="MARQUEE_", env_file=ENV_FILE, extra="ignore")

    bind_host: BindHost = bind_host_field("bind_host")
