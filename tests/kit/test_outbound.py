"""The SSRF guard (kit/outbound.py): tricky URLs refused by address, redirects checked per hop,
requests pinned to the checked address, bodies capped. A real HTTP server started by the test
stands in for the outside world (allowlisted, since it listens on loopback)."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from trellis.kit.outbound import (
    OutboundClient,
    OutboundPolicy,
    OutboundRefused,
    ResponseTooLarge,
    embedded_ipv4,
    forbidden_reason,
)

# Each is refused with no allowlist: every one reaches a loopback, private, link-local, multicast,
# reserved or otherwise non-global address, or is not http(s).
TRICKY = [
    "http://127.0.0.1/",
    "http://localhost/",
    "http://LOCALHOST./admin",
    "http://127.1/",
    "http://127.0.1/",
    "http://2130706433/",  # 127.0.0.1 as one decimal number
    "http://0x7f000001/",  # ... in hex
    "http://0x7f.0.0.1/",
    "http://0177.0.0.1/",  # ... in octal
    "http://017700000001/",
    "http://0/",
    "http://0.0.0.0:8000/",
    "http://[::1]/",
    "http://[::]/",
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped IPv6
    "http://[::ffff:7f00:1]/",
    "http://[0:0:0:0:0:ffff:127.0.0.1]/",
    "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    "http://[64:ff9b::7f00:1]/",  # NAT64 of 127.0.0.1
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",  # carrier-grade NAT
    "http://224.0.0.1/",
    "http://239.255.255.250:1900/",
    "http://255.255.255.255/",
    "http://198.18.0.1/",  # benchmarking
    "http://192.0.2.1/",  # documentation
    "http://240.0.0.1/",  # reserved
    "http://example.com@127.0.0.1/",  # the host is after the @
    "http://user:pass@10.1.2.3:8080/",
    "http://127.0.0.1#@example.com/",
    "https://127.0.0.1:443/",
    "file:///etc/passwd",
    "ftp://127.0.0.1/",
    "gopher://127.0.0.1:25/",
]


@pytest.mark.parametrize("url", TRICKY)
async def test_tricky_urls_are_refused(url: str) -> None:
    client = OutboundClient()
    try:
        with pytest.raises(OutboundRefused) as refused:
            await client.check(url, field="url")
        [entry] = refused.value.details["fields"]
        assert entry["field"] == "url"
        assert entry["type"] in {"url_forbidden", "url_scheme", "url_invalid", "url_unresolvable"}
    finally:
        await client.aclose()


def test_the_address_rules() -> None:
    assert forbidden_reason(ipaddress.ip_address("93.184.215.14")) is None
    assert forbidden_reason(ipaddress.ip_address("2606:4700:4700::1111")) is None
    assert "loopback" in (forbidden_reason(ipaddress.ip_address("::ffff:127.0.0.1")) or "")
    assert embedded_ipv4(ipaddress.ip_address("64:ff9b::a9fe:a9fe")) == ipaddress.ip_address("169.254.169.254")
    assert embedded_ipv4(ipaddress.ip_address("2002:0a00:0001::")) == ipaddress.ip_address("10.0.0.1")
    assert embedded_ipv4(ipaddress.ip_address("1.2.3.4")) is None


# --- against a real server ------------------------------------------------------------------------


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"host": request.headers.get("Host"), "method": request.method})

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 2_000_000)

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_route("*", "/redirect", redirect)
    app.router.add_get("/big", big)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


LOOPBACK_ALLOWED = OutboundPolicy.from_strings(["127.0.0.1/32"])


async def test_an_allowlisted_server_is_reached(server: str) -> None:
    client = OutboundClient(LOOPBACK_ALLOWED)
    try:
        response = await client.request("GET", f"{server}/echo")
        assert response.status_code == 200
        assert response.json()["method"] == "GET"
    finally:
        await client.aclose()
    refused = OutboundClient()
    try:
        with pytest.raises(OutboundRefused):
            await refused.request("GET", f"{server}/echo")
    finally:
        await refused.aclose()


@pytest.mark.parametrize(
    "location",
    ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/", "http://[::1]/", "file:///etc/passwd"],
)
async def test_every_redirect_hop_is_checked(server: str, location: str) -> None:
    """The first hop is allowed (the allowlisted test server); it redirects somewhere that is not."""
    client = OutboundClient(LOOPBACK_ALLOWED)
    try:
        with pytest.raises(OutboundRefused):
            await client.request("GET", f"{server}/redirect?to={location}")
    finally:
        await client.aclose()


async def test_redirects_are_followed_within_the_limit(server: str) -> None:
    client = OutboundClient(LOOPBACK_ALLOWED, max_redirects=2)
    try:
        response = await client.request("POST", f"{server}/redirect?to=/echo", content=b"{}")
        assert response.status_code == 200
        assert response.json()["method"] == "GET"  # 302 after a POST: the next hop is a GET
        loop = f"{server}/redirect?to=/redirect%3Fto%3D/redirect%253Fto%253D/echo"
        with pytest.raises(OutboundRefused, match="redirects"):
            await client.request("GET", loop)
    finally:
        await client.aclose()


async def test_the_request_goes_to_the_checked_address(server: str) -> None:
    """Pinning: the name is resolved once, checked, and the connection goes to that address with the
    name kept in Host. A resolver that would answer differently later (rebinding) is not asked again."""
    port = server.rsplit(":", 1)[1]
    answers = iter([["127.0.0.1"], ["169.254.169.254"]])

    async def rebinding(host: str, port: int) -> list[str]:
        return next(answers)

    client = OutboundClient(OutboundPolicy.from_strings(["127.0.0.1/32"]), resolver=rebinding)
    try:
        response = await client.request("GET", f"http://service.test:{port}/echo")
        assert response.json()["host"] == f"service.test:{port}"
        # The next request resolves again, and the changed answer is refused.
        with pytest.raises(OutboundRefused, match="link-local"):
            await client.request("GET", f"http://service.test:{port}/echo")
    finally:
        await client.aclose()


async def test_a_name_on_the_allowlist_may_resolve_anywhere(server: str) -> None:
    port = server.rsplit(":", 1)[1]

    async def internal(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    client = OutboundClient(OutboundPolicy.from_strings(["n8n.internal"]), resolver=internal)
    try:
        response = await client.request("GET", f"http://n8n.internal:{port}/echo")
        assert response.status_code == 200
    finally:
        await client.aclose()


async def test_responses_are_capped(server: str) -> None:
    client = OutboundClient(LOOPBACK_ALLOWED, max_response_bytes=1_000_000)
    try:
        with pytest.raises(ResponseTooLarge):
            await client.request("GET", f"{server}/big")
    finally:
        await client.aclose()
