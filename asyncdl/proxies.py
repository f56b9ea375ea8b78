"""Which proxy a request goes through, if any (pure: the environment is handed in).

``--proxy URL`` (``FetchOptions.proxy``) sends every request through that proxy; without it,
``HTTP_PROXY`` and ``HTTPS_PROXY`` name the proxy of each URL scheme, as urllib reads them (a
lower-case name wins; ``urllib.request.getproxies_environment``). Hosts listed in ``NO_PROXY``
are reached directly either way, as curl reads it (``*``, names with their subdomains, ``host:port``,
addresses and CIDR blocks). ``--proxy ''`` means no proxy at all.

The proxy is spoken to in plain http: https URLs go through it in a CONNECT tunnel, with TLS
from end to end, so the server's certificate is verified as without a proxy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from yarl import URL

from .errors import UsageError


def proxy_url(value: str, source: str) -> URL:
    """``value`` as an http proxy's URL (``host:port`` means ``http://host:port``); a
    ``UsageError`` naming ``source`` (``--proxy``, ``HTTPS_PROXY``) if it is not one."""
    text = value.strip()
    try:
        url = URL(text if "://" in text else f"http://{text}")
    except ValueError as exc:
        raise UsageError(
            f"{source}: not a proxy URL ({exc})"
        ) from exc  # the value may hold a password
    shown = str(url.with_password("***")) if url.password else text
    if url.scheme != "http":
        raise UsageError(
            f"{source}={shown}: asyncdl speaks to proxies in plain http (http://HOST:PORT; "
            "https URLs still go through it encrypted from end to end), not in "
            f"{url.scheme or 'an unknown scheme'}"
        )
    if not url.host:
        raise UsageError(f"{source}={shown}: a proxy URL needs a host, e.g. http://proxy:3128")
    return url


@dataclass(frozen=True)
class Proxies:
    """The proxy of each URL scheme, and the hosts reached directly (``NO_PROXY``'s value)."""

    by_scheme: Mapping[str, URL] = field(default_factory=dict)
    no_proxy: str = ""

    @classmethod
    def choose(cls, explicit: str | None, environment: Mapping[str, str]) -> Proxies:
        """``explicit`` (``--proxy``) if given, else the environment's, as
        ``urllib.request.getproxies_environment()`` reads it (``{"https": ..., "no": ...}``)."""
        no_proxy = environment.get("no", "")
        if explicit is not None:
            if not explicit:
                return cls()
            proxy = proxy_url(explicit, "--proxy")
            return cls({"http": proxy, "https": proxy}, no_proxy)
        found = {
            scheme: proxy_url(environment[scheme], f"{scheme.upper()}_PROXY")
            for scheme in ("http", "https")
            if environment.get(scheme)
        }
        return cls(found, no_proxy)

    def for_url(self, url: URL) -> URL | None:
        """The proxy a request for ``url`` goes through, or None for a direct connection."""
        proxy = self.by_scheme.get(url.scheme)
        if proxy is None or url.host is None or direct(url.host, url.port, self.no_proxy):
            return None
        return proxy


def direct(host: str, port: int | None, no_proxy: str) -> bool:
    """Whether ``no_proxy`` (NO_PROXY's comma-separated entries) lists ``host``."""
    host = host.lower().strip("[]").rstrip(".")
    for entry in no_proxy.lower().split(","):
        name = entry.strip().lstrip(".").rstrip(".")
        if not name:
            continue
        if name == "*" or name in (host, f"{host}:{port}", f"[{host}]:{port}"):
            return True
        name = name.strip("[]")
        if name == host or host.endswith(f".{name}"):
            return True
        if "/" in name and _in_network(host, name):
            return True
    return False


def _in_network(host: str, network: str) -> bool:
    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network(network, strict=False)
    except ValueError:  # not an address, or not a network
        return False
