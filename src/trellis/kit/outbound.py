"""Outbound HTTP to URLs a user supplied: the SSRF guard every such call goes through.

Workflow ``http.request`` steps, n8n base URLs and alert webhooks name hosts that users choose, and
a server that fetches them for the user must not become the user's way into the server's network:
loopback, private ranges, link-local (cloud metadata at 169.254.169.254), multicast, reserved and
other non-global addresses are refused unless the operator's allowlist names them.

How the guard holds:

* **Addresses, not spellings.** The host is resolved (``getaddrinfo``, which also reads the legacy
  forms ``2130706433``, ``0x7f.1`` or ``0177.0.0.1`` the way a client library would) and every
  address it resolves to is checked; an IPv6 address that embeds an IPv4 one (mapped ``::ffff:…``,
  6to4 ``2002::/16``, NAT64 ``64:ff9b::/96``) is checked as that IPv4 address too.
* **Pinned.** The request is sent to the address that was checked (the URL's host replaced by it,
  ``Host`` and TLS SNI kept as the name), so a DNS answer that changes between the check and the
  connection (rebinding) cannot redirect it.
* **Every hop.** Redirects are followed here, one at a time, each hop checked and pinned the same
  way, at most ``max_redirects``.
* **Bounded.** A total timeout per request, and the body is read up to ``max_response_bytes``.

Hand-written on httpx: no maintained library does address checks with pinning per hop for
asyncio (``requests``-era guards patch sockets; httpx has no hook between resolving and
connecting that a public API exposes).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import httpx

from trellis.kit.errors import TrellisError, ValidationFailed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

ALLOWED_SCHEMES = ("http", "https")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_REDIRECTS = {301, 302, 303, 307, 308}


class OutboundRefused(ValidationFailed):
    """The URL, or an address it resolves to, is not one Trellis may call (a 400 naming the field)."""


class ResponseTooLarge(TrellisError):
    code = "upstream_error"
    status_code = 502
    default_message = "The response is larger than allowed"


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64), if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def forbidden_reason(address: IPAddress) -> str | None:
    """Why a server-side call must not go to ``address``, or None when it may (a global unicast address)."""
    inner = embedded_ipv4(address)
    if inner is not None:
        reason = forbidden_reason(inner)
        return f"{reason} (inside {address})" if reason else None
    checks = (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("private", address.is_private),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("reserved", address.is_reserved),
    )
    for name, hit in checks:
        if hit:
            return f"{address} is a {name} address"
    if not address.is_global:
        return f"{address} is not a global address"
    return None


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, as the system resolver says (IP literals included)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class OutboundPolicy:
    """What an operator allows beyond global addresses: networks (``10.0.0.0/8``, ``127.0.0.1/32``)
    and exact host names (``n8n.internal``) whose addresses are then not checked."""

    allow_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    allow_hosts: frozenset[str] = frozenset()

    @classmethod
    def from_strings(cls, entries: Sequence[str]) -> OutboundPolicy:
        networks = []
        hosts = set()
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.strip().lower().rstrip("."))
        return cls(tuple(networks), frozenset(hosts))

    def allows(self, address: IPAddress) -> bool:
        return any(address in network for network in self.allow_networks)


@dataclass(frozen=True)
class Target:
    """A checked hop: the URL as given, and the address the request is pinned to."""

    url: httpx.URL
    address: str


class OutboundClient:
    """An httpx client for user-supplied URLs. ``field`` names what a refusal is about (``url``,
    ``base_url``) in the 400 it raises."""

    def __init__(
        self,
        policy: OutboundPolicy | None = None,
        *,
        timeout_seconds: float = 30.0,
        max_response_bytes: int = 1_048_576,
        max_redirects: int = 5,
        resolver: Resolver = system_resolver,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.policy = policy or OutboundPolicy()
        self.timeout_seconds = timeout_seconds
        self.max_response_bytes = max_response_bytes
        self.max_redirects = max_redirects
        self._resolve = resolver
        self._client = httpx.AsyncClient(timeout=timeout_seconds, follow_redirects=False, transport=transport)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def check(self, url: str | httpx.URL, *, field: str = "url") -> Target:
        """Refuse (``OutboundRefused``) a URL Trellis may not call; else the address to pin it to."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise OutboundRefused.of(field, f"not a valid URL: {exc}", type="url_invalid") from None
        if parsed.scheme not in ALLOWED_SCHEMES:
            raise OutboundRefused.of(
                field, f"only http and https URLs may be called, not {parsed.scheme!r}", type="url_scheme"
            )
        host = parsed.host
        if not host:
            raise OutboundRefused.of(field, "the URL has no host", type="url_invalid")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            found = await self._resolve(host, port)
        except (OSError, UnicodeError) as exc:
            raise OutboundRefused.of(field, f"cannot resolve {host!r}: {exc}", type="url_unresolvable") from None
        if not found:
            raise OutboundRefused.of(field, f"{host!r} resolves to no address", type="url_unresolvable")
        name_allowed = host.lower().rstrip(".") in self.policy.allow_hosts
        for text in found:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            reason = forbidden_reason(address)
            if reason is not None and not name_allowed and not self.policy.allows(address):
                raise OutboundRefused.of(
                    field, f"{host!r} may not be called: {reason}", type="url_forbidden", address=str(address)
                )
        return Target(parsed, found[0])

    async def request(
        self,
        method: str,
        url: str,
        *,
        field: str = "url",
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        """Send a request, following redirects hop by hop, each checked and pinned. Returns the final
        response, read (at most ``max_response_bytes``, else ``ResponseTooLarge``)."""
        current = url
        for _ in range(self.max_redirects + 1):
            target = await self.check(current, field=field)
            response = await self._send(method, target, headers or {}, content)
            if response.status_code not in _REDIRECTS or "location" not in response.headers:
                return response
            current = str(target.url.join(response.headers["location"]))
            if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
                method, content = "GET", None
        raise OutboundRefused.of(field, f"more than {self.max_redirects} redirects", type="url_redirects")

    async def _send(
        self, method: str, target: Target, headers: dict[str, str], content: bytes | None
    ) -> httpx.Response:
        host = target.url.host
        pinned = target.url.copy_with(host=target.address)
        request_headers = {**headers, "Host": target.url.netloc.decode("ascii").rsplit("@", 1)[-1]}
        extensions = {"sni_hostname": host} if target.url.scheme == "https" else {}
        request = self._client.build_request(
            method, pinned, headers=request_headers, content=content, extensions=extensions
        )
        response = await self._client.send(request, stream=True)
        try:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():  # decoded: the cap holds for compressed bodies too
                size += len(chunk)
                if size > self.max_response_bytes:
                    raise ResponseTooLarge(
                        f"{host}: the response is over {self.max_response_bytes} bytes",
                        details={"max_bytes": self.max_response_bytes},
                    )
                chunks.append(chunk)
        finally:
            await response.aclose()
        # The body as read (decoded, capped), under the URL the caller asked for, not the pinned one.
        headers_out = [(k, v) for k, v in response.headers.multi_items() if k.lower() != "content-encoding"]
        return httpx.Response(
            response.status_code,
            headers=headers_out,
            content=b"".join(chunks),
            request=httpx.Request(method, target.url),
        )
