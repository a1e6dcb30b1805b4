"""Fuzzing the two parsers of hostile input: the upload validator (any bytes) and the URL guard
(any URL, any spelling of any address). Each property runs a bounded number of derandomized
examples, seconds in all, so CI runs them every time."""

from __future__ import annotations

import io
import ipaddress
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

from app.errors import ServiceError
from app.imaging.validate import ALLOWED_FORMATS, Limits, analyse, measure
from app.net import fetch
from tests import samples

BOUNDED = settings(
    max_examples=150,
    deadline=timedelta(seconds=5),  # one decode of a small image; far above what it takes
    derandomize=True,  # the same examples on every run: a CI failure reproduces
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# --- the upload validator -------------------------------------------------------------------

LIMITS = Limits(max_bytes=256 * 1024, max_pixels=200 * 200, max_frames=8, thumbnail_size=32)


def _seeds() -> list[bytes]:
    small = samples.photo(5, (48, 36))
    seeds = [samples.encode(small, fmt) for fmt in ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP")]
    seeds.append(samples.animation("GIF", 3))
    seeds.append(samples.animation("PNG", 3))
    seeds.append(samples.png_header(10_000, 10_000))  # claims more pixels than allowed
    return seeds


SEEDS = _seeds()


@st.composite
def mutated_images(draw) -> bytes:
    """A valid small image with some bytes changed, inserted or cut, or random bytes."""
    if draw(st.booleans()) and draw(st.booleans()):
        return draw(st.binary(min_size=0, max_size=2048))
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        # Headers hold what a parser trusts: aim half the changes at the first 64 bytes.
        end = min(len(data), 64) if draw(st.booleans()) else len(data)
        at = draw(st.integers(0, max(0, end - 1)))
        action = draw(st.sampled_from(["set", "insert", "delete"]))
        if action == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif data:
            del data[at : at + draw(st.integers(1, 16))]
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]  # truncated
    return bytes(data)


def validate(data: bytes):
    stream = io.BytesIO(data)
    measure(stream, LIMITS.max_bytes)
    return analyse(stream, LIMITS)


@settings(BOUNDED, max_examples=400)
@given(data=mutated_images())
def test_the_validator_accepts_only_sane_images_and_refuses_the_rest_cleanly(data):
    try:
        found = validate(data)
    except ServiceError as refused:  # a clear refusal (400/413/415/422), never a crash
        assert refused.message
        event(f"refused: {type(refused).__name__}")
        return
    event(f"accepted: {found.format}")
    # What it accepts is within every limit and fully described.
    assert found.content_type in ALLOWED_FORMATS.values()
    assert 0 < found.width * found.height <= LIMITS.max_pixels
    assert 1 <= found.frames <= LIMITS.max_frames
    assert len(data) <= LIMITS.max_bytes
    assert found.thumbnail[:4] == b"RIFF" and found.thumbnail[8:12] == b"WEBP"
    with PILImage.open(io.BytesIO(found.thumbnail)) as thumbnail:
        assert max(thumbnail.size) <= LIMITS.thumbnail_size


def test_the_seeds_themselves_are_valid():
    """The fuzzing starts from images the validator accepts (else it tests little)."""
    accepted = [validate(seed).format for seed in SEEDS[:-1]]
    assert accepted == ["JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP", "GIF", "PNG"]


# --- the URL guard --------------------------------------------------------------------------

POLICY = fetch.FetchPolicy(max_bytes=1024, connect_timeout=1, read_timeout=1)

# What an import must never reach, by an oracle of its own (not the guard's tables).
INTERNAL = [
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4", "::/128", "::1/128",
        "fc00::/7", "fe80::/10", "ff00::/8",
    )
]  # fmt: skip


def internal(address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in INTERNAL if address.version == network.version)


def no_dns(host, port):
    raise AssertionError(f"an address literal went to DNS: {host!r}")


def guard(url: str, resolve=no_dns) -> list:
    """What `fetch` does before it connects: parse, then check every address."""
    target = fetch._parse(url)
    return fetch.checked_addresses(target.host, target.port, POLICY, resolve=resolve)


def spellings(address: ipaddress.IPv4Address) -> list[str]:
    """Ways to write one IPv4 address in a URL's host that resolvers accept."""
    n = int(address)
    octets = address.packed
    return [
        str(address),
        str(n),  # 2130706433
        hex(n),  # 0x7f000001
        ".".join(f"0{b:o}" for b in octets),  # 0177.0.0.01
        ".".join(hex(b) for b in octets),  # 0x7f.0x0.0x0.0x1
        f"{octets[0]}.{int.from_bytes(octets[1:], 'big')}",  # 127.1
        f"{address}.",  # trailing dot
        f"[::ffff:{address}]",  # IPv4-mapped IPv6
    ]


@BOUNDED
@given(address=st.ip_addresses(v=4))
def test_every_spelling_of_an_ipv4_address_gets_one_decision(address):
    decisions = set()
    for spelling in spellings(address):
        try:
            checked = guard(f"http://{spelling}/a.jpg")
            assert checked == [address]  # the very address that is checked is connected to
            decisions.add(True)
        except fetch.FetchError as refused:
            assert refused.reason in ("blocked_address", "bad_url"), refused.reason
            decisions.add(False)
    assert len(decisions) == 1, (address, decisions)
    if internal(address):
        assert decisions == {False}


@BOUNDED
@given(address=st.ip_addresses(v=6))
def test_no_internal_ipv6_address_passes(address):
    try:
        guard(f"https://[{address}]:8443/a.jpg")
    except fetch.FetchError as refused:
        assert refused.reason == "blocked_address"
        return
    # (Python 3.11 calls a few IANA-reachable anycast blocks private: the guard knows better.)
    assert not internal(address) and not address.is_multicast


@BOUNDED
@given(
    public=st.lists(st.ip_addresses(v=4), min_size=0, max_size=3),
    inside=st.ip_addresses(v=4).filter(internal),
    position=st.integers(0, 3),
)
def test_one_internal_answer_among_public_ones_refuses_the_host(public, inside, position):
    answers = [str(a) for a in public if not internal(a)]
    answers.insert(min(position, len(answers)), str(inside))
    with pytest.raises(fetch.FetchError) as refused:
        guard("http://images.example/a.jpg", resolve=lambda host, port: answers)
    assert refused.value.reason == "blocked_address"
    assert str(inside) not in refused.value.message  # what internal names resolve to stays in


url_text = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda scheme, auth, host, port, path: f"{scheme}{auth}{host}{port}{path}",
        st.sampled_from(["http://", "https://", "ftp://", "file://", "gopher://", "//", "HTTP://"]),
        st.sampled_from(["", "user@", "user:pw@", ":@", "a@b@"]),
        st.one_of(st.from_regex(r"[a-z0-9.\-\[\]:%]{0,30}", fullmatch=True), st.text(max_size=20)),
        st.sampled_from(["", ":0", ":80", ":65536", ":-1", ":99999999", ":x"]),
        st.text(max_size=20),
    ),
)


@BOUNDED
@given(url=url_text)
def test_any_url_is_refused_cleanly_or_reduced_to_a_checked_public_address(url):
    def public_only(host, port):
        return ["93.184.215.14"]  # a public address for any name

    try:
        target = fetch._parse(url)
        checked = fetch.checked_addresses(target.host, target.port, POLICY, resolve=public_only)
    except fetch.FetchError as refused:
        assert refused.reason in ("bad_url", "blocked_address", "connection_failed")
        return
    assert target.scheme in ("http", "https") and 0 < target.port < 65536 and target.host
    assert "@" not in target.host_header and target.url.split("://")[0] in ("http", "https")
    assert checked and not any(internal(a) for a in checked)
