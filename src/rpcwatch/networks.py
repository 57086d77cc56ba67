"""Address sets: which networks are internal, which are not the internet, and how an
address is tested against them exactly (IPv4 and IPv6, every prefix length).

Matching happens in SQL, so every address and network is mapped onto one 128-bit
space written as 32 lowercase hex digits: IPv6 as itself, IPv4 (and IPv4-mapped
IPv6, which is judged as its IPv4 address) as ``::ffff:a.b.c.d``. A network then is a
closed range of such keys; fixed-width hex strings compare like the numbers they
encode, in any SQL dialect. IPv6 networks that overlap ``::ffff:0:0/96`` exclude it,
so an IPv6 network never matches an IPv4 address (and vice versa).
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: RFC 1918 and IPv6 unique-local: the default "internal" networks
DEFAULT_INTERNAL = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")

#: Sources that are not the internet: Elastic's list (IANA IPv4 special-purpose registry,
#: multicast, reserved, ::1, fe80::/10, ff00::/8) plus the registry blocks it misses.
DEFAULT_NON_ROUTABLE = (
    "10.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24",
    "192.0.0.0/29", "192.0.0.8/32", "192.0.0.9/32", "192.0.0.10/32", "192.0.0.170/32",
    "192.0.0.171/32", "192.0.2.0/24", "192.31.196.0/24", "192.52.193.0/24", "192.168.0.0/16",
    "192.88.99.0/24", "224.0.0.0/4", "100.64.0.0/10", "192.175.48.0/24", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4", "::1/128", "fe80::/10", "ff00::/8",
    # not in Elastic's list
    "0.0.0.0/8", "::/128", "2001:db8::/32", "100::/64", "fec0::/10", "fc00::/7",
)

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_MAPPED_LO = int(_MAPPED.network_address)
_MAPPED_HI = int(_MAPPED.broadcast_address)


class NetworkError(ValueError):
    """A network written in a way we refuse to guess about (host bits set, not an address)."""


def parse_address(text: str) -> IPAddress | None:
    """An address as logs write it: surrounding blanks and brackets, IPv6 zone ids
    (``fe80::1%eth0``) and upper case are tolerated; IPv4-mapped IPv6 becomes IPv4.
    ``None`` when the text is not an address."""
    text = text.strip().strip("[]").split("%", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_network(text: str) -> IPNetwork:
    """A CIDR network; a bare address means /32 or /128. Host bits must be zero, as
    pySigma requires for ``|cidr``. IPv4-mapped IPv6 networks become IPv4 networks."""
    try:
        network = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError:
            raise NetworkError(f"{text!r} is not an IPv4 or IPv6 network ({exc})") from None
        raise NetworkError(f"{text!r} has host bits set; did you mean {loose}?") from None
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED) and network.prefixlen >= 96:
        return ipaddress.IPv4Network((int(network.network_address) - _MAPPED_LO, network.prefixlen - 96))
    return network


def address_spellings(address: IPAddress) -> tuple[str, ...]:
    """Text that a log line holding the address contains, in one of the spellings logs
    use: IPv4 dotted (also inside IPv4-mapped IPv6); IPv6 compressed (Zeek), unpadded
    without compression (Sysmon: ``fe80:0:0:0:...``) and fully exploded. Case is left to
    the (case-insensitive) search. For the byte-level prefilter, which can only look for
    text."""
    if address.version == 4:
        return (str(address),)
    groups = ":".join(f"{int(group, 16):x}" for group in address.exploded.split(":"))
    return tuple(dict.fromkeys((address.compressed, groups, address.exploded)))


def address_key(address: IPAddress) -> str:
    """The 32-hex-digit key of an address in the common space."""
    value = int(address) + (_MAPPED_LO if address.version == 4 else 0)
    return f"{value:032x}"


def network_key_ranges(network: IPNetwork) -> list[tuple[str, str]]:
    """The inclusive key ranges covering exactly the addresses of ``network``."""
    if network.version == 4:
        lo = int(network.network_address) + _MAPPED_LO
        hi = int(network.broadcast_address) + _MAPPED_LO
        return [(f"{lo:032x}", f"{hi:032x}")]
    lo, hi = int(network.network_address), int(network.broadcast_address)
    ranges = []
    if lo < _MAPPED_LO:
        ranges.append((lo, min(hi, _MAPPED_LO - 1)))
    if hi > _MAPPED_HI:
        ranges.append((max(lo, _MAPPED_HI + 1), hi))
    return [(f"{a:032x}", f"{b:032x}") for a, b in ranges]


def merged_key_ranges(networks: Iterable[IPNetwork]) -> list[tuple[str, str]]:
    """Key ranges of several networks, sorted and with overlaps merged."""
    spans = sorted((int(lo, 16), int(hi, 16)) for net in networks for lo, hi in network_key_ranges(net))
    merged: list[list[int]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return [(f"{lo:032x}", f"{hi:032x}") for lo, hi in merged]


def address_in(address: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    """Reference membership test (same version only), used by the test oracle."""
    return any(address.version == net.version and address in net for net in networks)


@dataclass(frozen=True)
class NetworkSet:
    """A named list of networks (``internal``, ``non_routable``)."""

    networks: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, texts: Sequence[str]) -> NetworkSet:
        return cls(tuple(parse_network(text) for text in texts))

    def __contains__(self, text: str) -> bool:
        address = parse_address(text)
        return address is not None and address_in(address, self.networks)

    def __str__(self) -> str:
        return ", ".join(str(net) for net in self.networks)
