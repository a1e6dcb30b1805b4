"""The import fetcher: real HTTP(S) servers on 127.0.0.1, names answered by fake resolvers.

Nothing here looks up a name or sends a packet beyond 127.0.0.1: refused addresses are refused
before any connection, and names resolve only through the resolvers passed in.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address, ip_address, ip_network

import pytest

from app.net.fetch import (
    FetchError,
    FetchPolicy,
    checked_addresses,
    fetch,
    is_allowed_address,
    policy_from_config,
    resolve_host,
)
from config import Config

LOCAL = (ip_network("127.0.0.1/32"),)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


def _policy(**changes) -> FetchPolicy:
    base = FetchPolicy(
        max_bytes=1024 * 1024, connect_timeout=0.5, read_timeout=0.5, allowed_networks=LOCAL
    )
    return replace(base, **changes)


def no_dns(host, port):
    raise AssertionError(f"looked up {host}: literal and refused URLs must not be resolved")


class FakeResolver:
    """Answers from a dict and remembers every question."""

    def __init__(self, answers: dict[str, list[str]]):
        self.answers, self.calls = answers, []

    def __call__(self, host, port):
        self.calls.append((host, port))
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.answers[host]


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.seen.append((self.path, self.headers.get("Host")))
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
        else:
            route(self)

    def log_message(self, *args):
        pass


class LocalServer(ThreadingHTTPServer):
    """A server on 127.0.0.1 with per-test routes that records each request's path and Host."""

    daemon_threads = True

    def __init__(self, context: ssl.SSLContext | None = None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes, self.seen, self.sni = {}, [], []
        self.release = threading.Event()  # set at teardown: wakes handlers that stall
        self.scheme = "http"
        if context is not None:
            context.sni_callback = lambda sock, name, ctx: self.sni.append(name)
            self.socket = context.wrap_socket(self.socket, server_side=True)
            self.scheme = "https"

    @property
    def port(self) -> int:
        return self.server_address[1]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    @property
    def paths(self) -> list[str]:
        return [path for path, _ in self.seen]


def send(handler, status=200, body=b"", headers=None):
    headers = {"Content-Type": "image/png", "Content-Length": str(len(body)), **(headers or {})}
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


def redirect(location, status=302):
    return lambda handler: send(handler, status, headers={"Location": location})


def _serve(server: LocalServer):
    server.routes["/image.png"] = lambda handler: send(handler, body=PNG)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def server():
    yield from _serve(LocalServer())


def _refused(code, url, policy=None, resolve=no_dns) -> FetchError:
    with pytest.raises(FetchError) as caught:
        fetch(url, policy or _policy(), resolve=resolve)
    assert caught.value.reason == code, caught.value.message
    return caught.value


def test_fetches_the_body_its_type_and_size(server):
    with fetch(server.url("/image.png"), _policy(), resolve=no_dns) as fetched:
        assert fetched.body.read() == PNG
        assert fetched.size == len(PNG)
        assert fetched.content_type == "image/png"
        assert fetched.final_url == server.url("/image.png")


def test_loopback_without_the_allowance_is_refused_before_any_request(server):
    _refused("blocked_address", server.url("/image.png"), _policy(allowed_networks=()))
    assert server.seen == []


@pytest.mark.parametrize(
    "spelling",
    [
        "127.0.0.1",
        "127.0.0.1.",
        "2130706433",
        "0x7f000001",
        "0X7F.0.0.1",
        "0177.0.0.1",
        "0177.0.0.01",
        "127.1",
        "0x7f.1",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[0:0:0:0:0:ffff:7f00:0001]",
    ],
)
def test_every_spelling_of_loopback_is_recognised(server, spelling):
    url = server.url("/image.png", host=spelling)
    _refused("blocked_address", url, _policy(allowed_networks=()))
    assert server.seen == []
    # With the allowance the same URL arrives: the spelling was understood as 127.0.0.1.
    with fetch(url, _policy(), resolve=no_dns) as fetched:
        assert fetched.body.read() == PNG
    assert server.seen == [("/image.png", f"127.0.0.1:{server.port}")]


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://2852039166/latest/meta-data/",  # 169.254.169.254
        "http://0xa9fea9fe/",
        "http://0251.0376.0251.0376/",
        "http://[::ffff:169.254.169.254]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://[64:ff9b::a9fe:a9fe]/",  # NAT64
        "http://[2002:a9fe:a9fe::1]/",  # 6to4
        "http://[::169.254.169.254]/",  # IPv4-compatible
        "http://[::1]/",
        "https://[::1]:8443/",
        "http://0.0.0.0/",
        "http://0/",
        "http://[::]/",
        "http://10.0.0.1/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://224.0.0.1/",
        "http://255.255.255.255/",
        "http://240.0.0.1/",
        "http://[fc00::1]/",
        "http://[fd12:3456::1]/",
        "http://[fe80::1]/",
        "http://[fe80::1%25eth0]/",
        "http://[ff02::1]/",
    ],
)
def test_literal_addresses_that_are_not_public_are_refused(url):
    _refused("blocked_address", url, _policy(allowed_networks=()))


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.255.255.254",
        "10.1.2.3",
        "172.31.255.255",
        "192.168.0.1",
        "169.254.169.254",
        "100.64.0.1",
        "100.127.255.254",
        "0.0.0.0",
        "192.0.0.1",
        "192.0.2.1",
        "198.18.0.1",
        "224.0.0.1",
        "224.0.1.1",  # multicast that ipaddress calls global
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "::127.0.0.1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "2002:7f00:1::",
        "2002:a00:1::1",
        "64:ff9b::7f00:1",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b:1::a00:1",
        "2001::1",  # Teredo
        "2001:db8::1",
        "fc00::1",
        "fdff::1",
        "fe80::1",
        "fec0::1",  # deprecated site-local, which ipaddress calls global
        "ff02::1",
        "ff0e::1",
    ],
)
def test_addresses_that_are_not_public_are_not_allowed(address):
    assert not is_allowed_address(ip_address(address))


@pytest.mark.parametrize(
    "address",
    ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"],
)
def test_public_addresses_are_allowed(address):
    assert is_allowed_address(ip_address(address))


# IANA's IPv4 and IPv6 special-purpose address registries: every block not marked globally
# reachable is refused, whatever Python's is_global says (3.11 calls 192.0.0.8 and 3fff::/20
# global).
IANA_NOT_GLOBALLY_REACHABLE = [
    "0.1.2.3",  # "this network"
    "100.64.0.1",  # shared address space (carrier-grade NAT)
    "192.0.0.1",  # IETF protocol assignments, DS-Lite
    "192.0.0.8",  # IPv4 dummy address
    "192.0.0.170",  # NAT64/DNS64 discovery
    "192.0.0.171",
    "192.0.0.255",
    "192.88.99.1",  # deprecated 6to4 relay anycast
    "192.88.99.2",  # 6a44 relay anycast
    "198.18.0.1",  # benchmarking
    "198.19.255.254",
    "198.51.100.7",  # documentation
    "203.0.113.7",
    "3fff::1",  # documentation (RFC 9637)
    "3fff:fff:ffff::1",
    "5f00::1",  # SRv6 SIDs
    "64:ff9b:1::1",  # local-use IPv4/IPv6 translation
    "100::1",  # discard-only
    "100:0:0:1::1",  # dummy IPv6 prefix
    "2001::1",  # Teredo
    "2001:2::1",  # benchmarking
    "2001:10::1",  # deprecated ORCHID
    "2001:1::4",  # IETF protocol assignments outside the reachable exceptions
    "2001:1ff::1",
    "2001:db8::1",
]
# More specific blocks inside those that IANA marks globally reachable.
IANA_GLOBALLY_REACHABLE = [
    "192.0.0.9",  # PCP anycast
    "192.0.0.10",  # TURN anycast
    "192.31.196.1",  # AS112
    "192.52.193.1",  # AMT
    "192.175.48.1",  # AS112 direct delegation
    "2001:1::1",  # PCP anycast
    "2001:1::2",  # TURN anycast
    "2001:1::3",  # DNS-SD SRP anycast
    "2001:3::1",  # AMT
    "2001:4:112::1",  # AS112-v6
    "2001:20::1",  # ORCHIDv2
    "2001:30::1",  # drone remote ID
    "2620:4f:8000::1",  # AS112 direct delegation
]


@pytest.mark.parametrize("address", IANA_NOT_GLOBALLY_REACHABLE)
def test_iana_special_purpose_addresses_are_not_allowed(address):
    assert not is_allowed_address(ip_address(address))
    # Nor when they arrive inside an IPv6 address that is routed to them.
    if ip_address(address).version == 4:
        assert not is_allowed_address(ip_address(f"::ffff:{address}"))
        assert not is_allowed_address(ip_address(f"64:ff9b::{address}"))


@pytest.mark.parametrize("address", IANA_GLOBALLY_REACHABLE)
def test_special_purpose_blocks_iana_marks_globally_reachable_are_allowed(address):
    assert is_allowed_address(ip_address(address))


@pytest.mark.parametrize("url", ["http://192.0.0.8/", "http://[3fff::1]/", "http://192.88.99.1/"])
def test_literal_special_purpose_addresses_are_refused(url):
    _refused("blocked_address", url, _policy(allowed_networks=()))


def test_the_allowance_opens_only_the_networks_listed():
    assert is_allowed_address(ip_address("127.0.0.1"), LOCAL)
    assert is_allowed_address(ip_address("::ffff:127.0.0.1"), LOCAL)
    assert not is_allowed_address(ip_address("127.0.0.2"), LOCAL)
    assert not is_allowed_address(ip_address("::1"), LOCAL)


@pytest.mark.parametrize(
    "answers",
    [
        ["93.184.216.34", "10.0.0.5"],
        ["10.0.0.5", "93.184.216.34"],
        ["2606:4700::1111", "::ffff:192.168.0.1"],
        ["93.184.216.34", "169.254.169.254"],
    ],
)
def test_a_name_with_any_disallowed_address_is_refused(answers):
    resolve = FakeResolver({"mixed.test": answers})
    with pytest.raises(FetchError) as caught:
        checked_addresses("mixed.test", 80, _policy(allowed_networks=()), resolve=resolve)
    assert caught.value.reason == "blocked_address"
    assert "10.0.0.5" not in caught.value.message  # internal answers are not disclosed


def test_a_name_with_only_public_addresses_is_checked_once():
    resolve = FakeResolver({"public.test": ["93.184.216.34", "::ffff:93.184.216.34"]})
    addresses = checked_addresses("public.test", 443, _policy(), resolve=resolve)
    assert addresses == [IPv4Address("93.184.216.34")]
    assert resolve.calls == [("public.test", 443)]


@pytest.mark.parametrize("answers", [["127.0.0.1", "10.0.0.5"], ["10.0.0.5", "127.0.0.1"]])
def test_fetch_refuses_a_name_with_one_allowed_and_one_private_address(server, answers):
    # 127.0.0.1 stands in for a public address: allowed, and safe to reach if the check failed.
    resolve = FakeResolver({"mixed.test": answers})
    _refused("blocked_address", server.url("/image.png", host="mixed.test"), resolve=resolve)
    assert server.seen == []


def test_connects_to_the_checked_address_and_keeps_the_host_header(server):
    resolve = FakeResolver({"allowed.test": ["127.0.0.1"]})
    url = server.url("/image.png", host="allowed.test")
    with fetch(url, _policy(), resolve=resolve) as fetched:
        assert fetched.body.read() == PNG
        assert fetched.final_url == url
    # "allowed.test" exists nowhere but in the fake: the connection used the checked address,
    # and the name was looked up exactly once.
    assert server.seen == [("/image.png", f"allowed.test:{server.port}")]
    assert resolve.calls == [("allowed.test", server.port)]


@pytest.mark.parametrize("answers", [[], ["not an address"]])
def test_a_name_that_does_not_resolve_is_a_connection_failure(answers):
    _refused(
        "connection_failed", "http://nowhere.test/", resolve=FakeResolver({"nowhere.test": answers})
    )
    _refused("connection_failed", "http://unknown.test/", resolve=FakeResolver({}))


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.test/image.png",
        "gopher://example.test:70/_GET",
        "data:image/png;base64,iVBORw0KGgo=",
        "javascript:alert(1)",
        "dict://example.test:11211/stats",
        "example.test/image.png",
        "//example.test/image.png",
        "http://user:secret@example.test/image.png",
        "http://user@example.test/image.png",
        "http:///image.png",
        "http://",
        "http://example.test:99999/",
        "http://example.test:0/",
        "http://example.test:port/",
        "http://[::1/",
        "http://exa mple.test/",
        "http://999.0.0.1/",
        "http://0x100000000/",
        "",
    ],
)
def test_urls_that_are_not_plain_http_are_refused_before_any_lookup(url):
    error = _refused("bad_url", url)
    assert error.message


def test_follows_redirects_up_to_the_limit(server):
    server.routes["/one"] = redirect("/two", 301)
    server.routes["/two"] = redirect(server.url("/three"), 307)
    server.routes["/three"] = redirect("/image.png", 308)
    with fetch(server.url("/one"), _policy(), resolve=no_dns) as fetched:
        assert fetched.body.read() == PNG
        assert fetched.final_url == server.url("/image.png")
    assert server.paths == ["/one", "/two", "/three", "/image.png"]


def test_one_redirect_too_many_is_refused(server):
    server.routes["/one"] = redirect("/two")
    server.routes["/two"] = redirect("/three")
    server.routes["/three"] = redirect("/four")
    server.routes["/four"] = redirect("/image.png")
    _refused("too_many_redirects", server.url("/one"))
    assert server.paths == ["/one", "/two", "/three", "/four"]

    server.seen.clear()
    _refused("too_many_redirects", server.url("/four"), _policy(max_redirects=0))
    assert server.paths == ["/four"]


def test_relative_redirects_resolve_against_the_current_url(server):
    server.routes["/a/b/start"] = redirect("next")
    server.routes["/a/b/next"] = redirect("../../image.png?size=full#top")
    server.routes["/image.png?size=full"] = lambda handler: send(handler, body=PNG)
    with fetch(server.url("/a/b/start"), _policy(), resolve=no_dns) as fetched:
        assert fetched.final_url == server.url("/image.png?size=full")
    assert server.paths == ["/a/b/start", "/a/b/next", "/image.png?size=full"]


@pytest.mark.parametrize(
    ("location", "code"),
    [
        ("http://169.254.169.254/latest/meta-data/", "blocked_address"),
        ("//169.254.169.254/latest/meta-data/", "blocked_address"),
        ("http://[::ffff:127.0.0.2]:{port}/image.png", "blocked_address"),
        ("http://[::1]:{port}/image.png", "blocked_address"),
        ("http://0x7f000002:{port}/image.png", "blocked_address"),
        ("http://internal.test:{port}/image.png", "blocked_address"),
        ("file:///etc/passwd", "bad_url"),
        ("gopher://127.0.0.1:{port}/_GET", "bad_url"),
        ("http://user:pw@127.0.0.1:{port}/image.png", "bad_url"),
    ],
)
def test_each_redirect_is_checked_like_the_first_url(server, location, code):
    server.routes["/start"] = redirect(location.format(port=server.port))
    resolve = FakeResolver({"internal.test": ["10.0.0.7"]})
    _refused(code, server.url("/start"), resolve=resolve)
    assert server.paths == ["/start"]


def test_a_redirect_to_a_name_resolves_that_name(server):
    server.routes["/start"] = redirect(server.url("/image.png", host="cdn.test"))
    resolve = FakeResolver({"cdn.test": ["127.0.0.1"]})
    with fetch(server.url("/start"), _policy(), resolve=resolve) as fetched:
        assert fetched.body.read() == PNG
    assert resolve.calls == [("cdn.test", server.port)]
    assert server.seen[-1] == ("/image.png", f"cdn.test:{server.port}")


@pytest.mark.parametrize("status", [302, 403, 404, 410, 500, 503])
def test_a_final_status_other_than_2xx_is_an_http_error(server, status):
    server.routes["/status"] = lambda handler: send(handler, status, b"nope")
    error = _refused("http_error", server.url("/status"))
    assert str(status) in error.message


def _endless(handler):
    handler.send_response(200)
    handler.send_header("Content-Type", "image/png")
    handler.end_headers()
    chunk = b"\0" * 65536
    try:
        for _ in range(16 * 1024):  # a gigabyte at most, should the client never hang up
            handler.wfile.write(chunk)
    except OSError:
        pass


def test_a_body_without_length_is_cut_at_the_cap(server):
    server.routes["/endless"] = _endless
    started = time.monotonic()
    _refused("too_large", server.url("/endless"), _policy(max_bytes=200_000))
    assert time.monotonic() - started < 5


def test_a_body_of_exactly_the_cap_is_accepted(server):
    server.routes["/exact"] = lambda handler: _close_delimited(handler, b"x" * 1000)
    server.routes["/over"] = lambda handler: _close_delimited(handler, b"x" * 1001)
    with fetch(server.url("/exact"), _policy(max_bytes=1000), resolve=no_dns) as fetched:
        assert fetched.size == 1000
    _refused("too_large", server.url("/over"), _policy(max_bytes=1000))


def _close_delimited(handler, body):
    handler.send_response(200)
    handler.end_headers()
    handler.wfile.write(body)


def test_a_content_length_above_the_cap_is_refused_before_reading(server):
    def announce_and_stall(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", str(10**12))
        handler.end_headers()
        handler.wfile.flush()
        handler.server.release.wait(10)

    server.routes["/huge"] = announce_and_stall
    # Reading would stall into a timeout; refusing on the header alone gives too_large.
    _refused("too_large", server.url("/huge"), _policy(max_bytes=1000))


@pytest.mark.parametrize(
    ("length", "refused"),
    # "²" is a digit to str.isdigit, not to int(); 5,000 digits are more than int() reads.
    [("\u00b2", None), ("9" * 5000, "too_large")],
    ids=["superscript-two", "5000-digits"],
)
def test_a_content_length_that_is_no_number_is_no_crash(server, length, refused):
    def announce(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        handler.send_header("Content-Length", length)
        handler.end_headers()
        handler.wfile.write(PNG)
        handler.close_connection = True  # the body ends where the connection does

    server.routes["/odd"] = announce
    if refused:
        _refused(refused, server.url("/odd"), _policy(max_bytes=1000))
        return
    with fetch(server.url("/odd"), _policy(), resolve=no_dns) as fetched:
        assert fetched.body.read() == PNG


def test_a_server_that_does_not_answer_times_out(server):
    server.routes["/slow"] = lambda handler: handler.server.release.wait(10)
    started = time.monotonic()
    error = _refused("timeout", server.url("/slow"))
    assert time.monotonic() - started < 3
    assert "127.0.0.1" in error.message


def test_a_body_that_stalls_times_out(server):
    def stall(handler):
        send(handler, body=b"x" * 10, headers={"Content-Length": "1000"})
        handler.wfile.flush()
        handler.server.release.wait(10)

    server.routes["/stall"] = stall
    started = time.monotonic()
    _refused("timeout", server.url("/stall"))
    assert time.monotonic() - started < 3


@pytest.fixture
def unresponsive_port():
    """A port whose accept queue is full, so that a new connection hangs in the handshake."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.1)
    yield port
    for sock in [*fillers, listener]:
        sock.close()


def test_a_connection_that_is_not_accepted_times_out(unresponsive_port):
    started = time.monotonic()
    _refused("timeout", f"http://127.0.0.1:{unresponsive_port}/image.png")
    assert time.monotonic() - started < 3


def test_a_refused_connection_is_a_connection_failure():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _refused("connection_failed", f"http://127.0.0.1:{port}/image.png")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for allowed.test only (no IP address in it)."""
    if not shutil.which("openssl"):
        pytest.skip("needs the openssl command to make a certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=allowed.test", "-addext", "subjectAltName=DNS:allowed.test",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls_server(certificate):
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    yield from _serve(LocalServer(context))


def test_https_verifies_the_name_while_connecting_to_the_address(tls_server, certificate):
    policy = _policy(ca_certs=str(certificate[0]))
    resolve = FakeResolver({"allowed.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    with fetch(tls_server.url("/image.png", "allowed.test"), policy, resolve=resolve) as fetched:
        assert fetched.body.read() == PNG
    assert tls_server.sni == ["allowed.test"]
    assert tls_server.seen == [("/image.png", f"allowed.test:{tls_server.port}")]

    # The same address under a name the certificate does not carry fails verification...
    _refused("connection_failed", tls_server.url("/image.png", "other.test"), policy, resolve)
    # ...and so does a certificate nobody vouches for.
    _refused("connection_failed", tls_server.url("/image.png", "allowed.test"), _policy(), resolve)
    assert tls_server.seen == [("/image.png", f"allowed.test:{tls_server.port}")]


def test_policy_from_config():
    config = {name: getattr(Config, name) for name in dir(Config) if name.isupper()}
    policy = policy_from_config(config)
    assert policy.max_bytes == Config.IMPORT_MAX_BYTES > 0
    assert policy.max_redirects == Config.IMPORT_MAX_REDIRECTS

    config.update(
        IMPORT_MAX_BYTES=1000,
        IMPORT_CONNECT_TIMEOUT=1,
        IMPORT_READ_TIMEOUT=2,
        IMPORT_MAX_REDIRECTS=0,
        IMPORT_ALLOW_NETWORKS=["127.0.0.1/32", "fd00::/8"],
    )
    assert policy_from_config(config) == FetchPolicy(
        max_bytes=1000,
        connect_timeout=1.0,
        read_timeout=2.0,
        max_redirects=0,
        allowed_networks=(ip_network("127.0.0.1/32"), ip_network("fd00::/8")),
    )
    with pytest.raises(ValueError):
        policy_from_config({**config, "IMPORT_ALLOW_NETWORKS": ["not-a-network"]})


def test_the_default_resolver_returns_addresses():
    # A numeric host: getaddrinfo answers it without asking DNS.
    assert resolve_host("127.0.0.1", 80) == ["127.0.0.1"]


def _drip(handler):
    """Headers at once, then the body one byte every 0.1 s: never idle long enough for a read
    timeout, done only after a minute."""
    handler.send_response(200)
    handler.send_header("Content-Type", "image/png")
    handler.end_headers()
    _drip_bytes(handler)


def _drip_bytes(handler):
    try:
        for _ in range(600):
            handler.wfile.write(b"x")
            handler.wfile.flush()
            if handler.server.release.wait(0.1):
                return
    except OSError:
        pass


def _drip_headers(handler):
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Padding: ")
    _drip_bytes(handler)


@pytest.mark.parametrize("route", [_drip, _drip_headers], ids=["body", "headers"])
def test_a_download_that_drips_ends_at_its_deadline(server, route):
    server.routes["/drip"] = route
    error = _refused("timeout", server.url("/drip"), _policy(read_timeout=5, deadline=1))
    assert "longer than 1 s" in error.message


def test_a_download_within_its_deadline_is_whole(server):
    body = PNG * 4

    def steady(handler):
        send(handler, body=body[:100], headers={"Content-Length": str(len(body))})
        handler.wfile.flush()
        time.sleep(0.2)
        handler.wfile.write(body[100:])

    server.routes["/steady"] = steady
    with fetch(server.url("/steady"), _policy(deadline=5), resolve=no_dns) as fetched:
        assert fetched.body.read() == body
