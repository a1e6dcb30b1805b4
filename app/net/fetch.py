"""Downloading an image by URL for bulk import, without letting a URL reach the inside network.

Every hop is checked the same way: http or https only, no credentials, the host resolved once
and every address it resolves to globally reachable (or in `FetchPolicy.allowed_networks`).
The connection then goes to the checked address itself, never to the name again, so a DNS
answer that changes between the check and the connection cannot point it elsewhere.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import urljoin

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    LocationParseError,
    NewConnectionError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.util import Url, parse_url

from app.errors import ServiceError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) -> every address the host resolves to, as strings or ipaddress objects.
Resolver = Callable[[str, int], Iterable[Any]]

SCHEMES = {"http": 80, "https": 443}
REDIRECT_STATUSES = {301, 302, 303, 307, 308}
USER_AGENT = "Likeness image import"
_CHUNK = 64 * 1024
_SPOOL_IN_MEMORY = 1024 * 1024
# Well-known NAT64 prefix (RFC 6052): the last 32 bits are the IPv4 address reached.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _networks(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


# IANA's IPv4 and IPv6 Special-Purpose Address Registries: the blocks not marked "globally
# reachable" (N/A counts as not). Explicit, because Python's is_global lags the registries
# (3.11 calls 192.0.0.8 and the 3fff::/20 documentation block global).
_SPECIAL_PURPOSE = _networks(
    "0.0.0.0/8",  # "this network"
    "10.0.0.0/8",
    "100.64.0.0/10",  # shared address space
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",  # IETF protocol assignments (DS-Lite, dummy, NAT64 discovery, ...)
    "192.0.2.0/24",  # documentation
    "192.88.99.0/24",  # deprecated 6to4 relay anycast, 6a44
    "192.168.0.0/16",
    "198.18.0.0/15",  # benchmarking
    "198.51.100.0/24",  # documentation
    "203.0.113.0/24",  # documentation
    "240.0.0.0/4",  # reserved, limited broadcast
    "::/128",
    "::1/128",
    "64:ff9b:1::/48",  # local-use IPv4/IPv6 translation
    "100::/64",  # discard-only
    "100:0:0:1::/64",  # dummy prefix
    "2001::/23",  # IETF protocol assignments (Teredo, benchmarking, ORCHID, ...)
    "2001:db8::/32",  # documentation
    "3fff::/20",  # documentation
    "5f00::/16",  # SRv6 SIDs
    "fc00::/7",  # unique local
    "fe80::/10",  # link-local
)
# Blocks inside those that IANA marks globally reachable (anycast services, AS112, ...).
_SPECIAL_PURPOSE_REACHABLE = _networks(
    "192.0.0.9/32",
    "192.0.0.10/32",
    "2001:1::1/128",
    "2001:1::2/128",
    "2001:1::3/128",
    "2001:3::/32",
    "2001:4:112::/48",
    "2001:20::/28",
    "2001:30::/28",
)
# The legacy IPv4 spellings inet_aton accepts: 1 to 4 parts, each decimal, octal or hex.
_LEGACY_IPV4 = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}\.?", re.I)


class FetchError(ServiceError):
    """A URL that cannot be imported; `reason` says why in one word (`bad_url`, `timeout`,
    `blocked_address`, ...), the message is fit for a user's report."""

    def __init__(self, message: str, *, reason: str = "fetch_failed"):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class FetchPolicy:
    max_bytes: int
    connect_timeout: float
    read_timeout: float
    max_redirects: int = 3
    # Explicit exceptions to the public-addresses-only rule: for tests and intranets only.
    allowed_networks: tuple[IPNetwork, ...] = ()
    # A CA bundle to trust instead of the system's (which SSL_CERT_FILE also overrides).
    ca_certs: str | None = None
    # Seconds for the whole download, redirects included (see _Deadline).
    deadline: float = 120.0


@dataclass
class Fetched:
    """A downloaded body, rewound; the caller closes it (or uses `with`)."""

    body: BinaryIO
    content_type: str | None
    final_url: str
    size: int

    def close(self) -> None:
        self.body.close()

    def __enter__(self) -> Fetched:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def policy_from_config(config: Mapping[str, Any]) -> FetchPolicy:
    """The policy the IMPORT_* settings describe."""
    return FetchPolicy(
        max_bytes=int(config["IMPORT_MAX_BYTES"]),
        connect_timeout=float(config["IMPORT_CONNECT_TIMEOUT"]),
        read_timeout=float(config["IMPORT_READ_TIMEOUT"]),
        max_redirects=int(config["IMPORT_MAX_REDIRECTS"]),
        allowed_networks=tuple(ipaddress.ip_network(n) for n in config["IMPORT_ALLOW_NETWORKS"]),
        deadline=float(config["IMPORT_DEADLINE_SECONDS"]),
    )


def resolve_host(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for `host`."""
    return [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def is_allowed_address(address: IPAddress, allowed_networks: Iterable[IPNetwork] = ()) -> bool:
    """Whether imports may connect to `address`: globally reachable unicast, or allowed."""
    address = _unmapped(address)
    allowed_networks = tuple(allowed_networks)
    if any(address in network for network in allowed_networks):
        return True
    if isinstance(address, ipaddress.IPv6Address):
        # 6to4 and NAT64 addresses are routed to the IPv4 address they carry: judge that one.
        embedded = address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return is_allowed_address(embedded, allowed_networks)
    if any(address in network for network in _SPECIAL_PURPOSE_REACHABLE):
        return True
    if any(address in network for network in _SPECIAL_PURPOSE):
        return False
    # is_global alone is not enough before Python 3.13: it passes multicast and fec0::/10.
    return address.is_global and not (
        address.is_multicast
        or address.is_private
        or address.is_reserved
        or address.is_loopback
        or address.is_link_local
        or address.is_unspecified
        or getattr(address, "is_site_local", False)
    )


def checked_addresses(
    host: str, port: int, policy: FetchPolicy, *, resolve: Resolver = resolve_host
) -> list[IPAddress]:
    """Resolve `host` once and return its addresses, refusing if any one is not allowed."""
    literal = _literal_address(host)
    if literal is not None:
        candidates = [literal]
    else:
        try:
            answers = list(resolve(host, port))
            candidates = [_unmapped(ipaddress.ip_address(str(a))) for a in answers]
        except (OSError, UnicodeError, ValueError) as exc:
            raise FetchError(
                f"could not look up the host {host}", reason="connection_failed"
            ) from exc
        if not candidates:
            raise FetchError(f"could not look up the host {host}", reason="connection_failed")
    if not all(is_allowed_address(a, policy.allowed_networks) for a in candidates):
        # The address is not named: it would tell the user what internal names resolve to.
        raise FetchError(
            f"{host} points to a private or reserved address; only public addresses can be "
            "imported from",
            reason="blocked_address",
        )
    return list(dict.fromkeys(candidates))


def fetch(url: str, policy: FetchPolicy, *, resolve: Resolver = resolve_host) -> Fetched:
    """Download `url` under `policy`, checking every redirect as if it were the first URL, all
    within `policy.deadline` seconds."""
    with _Deadline(policy.deadline) as deadline:
        try:
            fetched = _fetch(url, policy, resolve, deadline)
        except Exception as exc:
            if deadline.expired:  # whatever the cut-off connection raised
                raise deadline.error(url) from exc
            raise
        if deadline.expired:  # a body without length ends, cut short, like a whole one
            fetched.close()
            raise deadline.error(url)
        return fetched


def _fetch(url: str, policy: FetchPolicy, resolve: Resolver, deadline: _Deadline) -> Fetched:
    for _ in range(policy.max_redirects + 1):
        target = _parse(url)
        addresses = checked_addresses(target.host, target.port, policy, resolve=resolve)
        if deadline.expired:
            raise deadline.error(url)
        with _translated_errors(target.host):
            pool, response = _request(target, addresses, policy, deadline)
            with pool:
                try:
                    location = response.headers.get("Location")
                    if response.status in REDIRECT_STATUSES and location:
                        url = _redirect_target(target.url, location)
                        continue
                    if not 200 <= response.status < 300:
                        raise FetchError(
                            f"{target.host} answered HTTP {response.status} "
                            f"{response.reason or ''}".rstrip(),
                            reason="http_error",
                        )
                    return _read_body(response, policy, target.url)
                finally:
                    response.close()
    raise FetchError(
        f"more than {policy.max_redirects} redirects; the last one pointed to {url}",
        reason="too_many_redirects",
    )


def _redirect_target(url: str, location: str) -> str:
    try:
        return urljoin(url, location.strip())
    except ValueError as exc:  # "Invalid IPv6 URL": an unbalanced [ or ] in the host
        raise FetchError(
            f"{url} redirected to something that is not a valid URL", reason="bad_url"
        ) from exc


class _Deadline:
    """A time limit for a whole download. Read timeouts bound each wait for data, not the
    download: a server that sends a byte every few seconds never trips them. When the deadline
    passes, every connection of the download is shut down, which ends whatever read is waiting
    on it; `fetch` then reports the deadline rather than what the read saw.

    The sockets are watched through duplicates of their descriptors, closed only here, so a
    shutdown can never reach a descriptor that was closed and reused meanwhile.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self._watched: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()
        with self._lock:
            for watched in self._watched:
                watched.close()
            self._watched = []

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            watched = sock.dup()
            self._watched.append(watched)
            if self.expired:
                _shut_down(watched)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for watched in self._watched:
                _shut_down(watched)

    def error(self, url: str) -> FetchError:
        return FetchError(
            f"downloading {url} took longer than {self.seconds:g} s", reason="timeout"
        )


def _shut_down(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by the other side
        sock.shutdown(socket.SHUT_RDWR)


class _Watched:
    """A connection whose socket a deadline watches from the moment it connects, so that the
    deadline covers the TLS handshake and the headers as well as the body."""

    def __init__(self, *args: Any, deadline: _Deadline, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._deadline = deadline

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # the TCP socket, before any TLS
        self._deadline.watch(sock)
        return sock


class _WatchedHTTPConnection(_Watched, urllib3.connection.HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, urllib3.connection.HTTPSConnection):
    pass


@dataclass(frozen=True)
class _Target:
    url: str
    scheme: str
    host: str  # the name to resolve and verify, without IPv6 brackets
    port: int
    host_header: str
    request_uri: str


def _parse(url: str) -> _Target:
    try:
        parsed: Url = parse_url(url.strip())
    except LocationParseError as exc:
        raise FetchError(f"not a valid URL: {url}", reason="bad_url") from exc
    if parsed.scheme not in SCHEMES:
        raise FetchError(
            f"only http:// and https:// URLs can be imported, not {url}", reason="bad_url"
        )
    if parsed.auth is not None:
        raise FetchError("URLs with a user name or password cannot be imported", reason="bad_url")
    if not parsed.host:
        raise FetchError(f"the URL has no host: {url}", reason="bad_url")
    port = SCHEMES[parsed.scheme] if parsed.port is None else parsed.port
    if not 0 < port < 65536:
        raise FetchError(f"the URL has an invalid port: {url}", reason="bad_url")

    host = parsed.host.strip("[]")
    if (literal := _literal_address(host)) is not None:
        host = str(literal)  # 2130706433 and 0x7f.1 mean 127.0.0.1: say so to the server
    netloc = f"[{host}]" if ":" in host else host
    if port != SCHEMES[parsed.scheme]:
        netloc = f"{netloc}:{port}"
    return _Target(
        url=parsed._replace(auth=None, fragment=None).url,
        scheme=parsed.scheme,
        host=host,
        port=port,
        host_header=netloc,
        request_uri=parsed.request_uri,
    )


def _literal_address(host: str) -> IPAddress | None:
    """The address a host written as an IP address means, in any spelling, else None."""
    host = host.strip("[]")
    try:
        return _unmapped(ipaddress.ip_address(host))
    except ValueError:
        pass
    # Parsed here rather than left to getaddrinfo, whose handling of 0177.1 and friends
    # differs between C libraries: what is checked is what the connection uses.
    if _LEGACY_IPV4.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host.rstrip(".")))
        except OSError as exc:
            raise FetchError(f"{host} is not a valid IP address", reason="bad_url") from exc
    return None


def _unmapped(address: IPAddress) -> IPAddress:
    # ::ffff:a.b.c.d is the IPv4 host a.b.c.d reached through an IPv6 socket.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _request(
    target: _Target, addresses: list[IPAddress], policy: FetchPolicy, deadline: _Deadline
) -> tuple[urllib3.HTTPConnectionPool, urllib3.BaseHTTPResponse]:
    """Send the GET to the first checked address that accepts a connection."""
    headers = {
        "Host": target.host_header,
        "User-Agent": USER_AGENT,
        "Accept": "image/*, */*;q=0.5",
        # Decoded bytes are what the cap counts, but there is no reason to invite a zip bomb.
        "Accept-Encoding": "identity",
    }
    for index, address in enumerate(addresses):
        pool = _pool(target, address, policy, deadline)
        try:
            response = pool.urlopen(
                "GET",
                target.request_uri,
                headers=headers,
                retries=False,
                redirect=False,
                preload_content=False,
                assert_same_host=False,
            )
        except (NewConnectionError, ConnectTimeoutError):
            pool.close()
            # Nothing was sent yet, so the next address may be tried: while there is time (a
            # name with many addresses that never answer would take a connect timeout each).
            if index == len(addresses) - 1 or deadline.expired:
                raise
            continue
        except BaseException:
            pool.close()
            raise
        return pool, response
    raise AssertionError("checked_addresses never returns an empty list")


def _pool(
    target: _Target, address: IPAddress, policy: FetchPolicy, deadline: _Deadline
) -> urllib3.HTTPConnectionPool:
    options: dict[str, Any] = {
        "port": target.port,
        "timeout": urllib3.Timeout(connect=policy.connect_timeout, read=policy.read_timeout),
        "retries": False,
        "maxsize": 1,
        "deadline": deadline,  # passed on to each connection the pool makes
    }
    if target.scheme == "https":
        # SNI and certificate checks use the name from the URL; the socket uses the address.
        pool: urllib3.HTTPConnectionPool = urllib3.HTTPSConnectionPool(
            str(address),
            server_hostname=target.host,
            assert_hostname=target.host,
            cert_reqs="CERT_REQUIRED",
            ca_certs=policy.ca_certs,
            **options,
        )
        pool.ConnectionCls = _WatchedHTTPSConnection
    else:
        pool = urllib3.HTTPConnectionPool(str(address), **options)
        pool.ConnectionCls = _WatchedHTTPConnection
    return pool


def _read_body(response: urllib3.BaseHTTPResponse, policy: FetchPolicy, url: str) -> Fetched:
    too_large = FetchError(f"the file is larger than {policy.max_bytes} bytes", reason="too_large")
    length = response.headers.get("Content-Length", "").strip()
    # ASCII digits only, and few: int() refuses "²" and numbers of thousands of digits.
    if (
        length.isascii()
        and length.isdigit()
        and (len(length) > 18 or int(length) > policy.max_bytes)
    ):
        raise too_large
    # Handed to the caller, who closes it; closed here only on failure.
    body = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # noqa: SIM115
    size = 0
    try:
        # Content-Length may be absent or wrong: count what actually arrives, and read at
        # most one byte past the cap.
        while chunk := response.read(min(_CHUNK, policy.max_bytes - size + 1)):
            size += len(chunk)
            if size > policy.max_bytes:
                raise too_large
            body.write(chunk)
        body.seek(0)
    except BaseException:
        body.close()
        raise
    content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    return Fetched(body, content_type or None, url, size)


@contextmanager
def _translated_errors(host: str) -> Iterator[None]:
    """urllib3's exceptions as FetchErrors a user can read."""
    try:
        yield
    except NewConnectionError as exc:  # a subclass of ConnectTimeoutError: check it first
        raise FetchError(f"could not connect to {host}", reason="connection_failed") from exc
    except ConnectTimeoutError as exc:
        raise FetchError(f"connecting to {host} timed out", reason="timeout") from exc
    except ReadTimeoutError as exc:
        raise FetchError(f"{host} stopped sending data", reason="timeout") from exc
    except SSLError as exc:
        raise FetchError(
            f"the secure connection to {host} failed: {exc}",
            reason="connection_failed",
        ) from exc
    except HTTPError as exc:
        raise FetchError(
            f"the connection to {host} failed: {exc}", reason="connection_failed"
        ) from exc
