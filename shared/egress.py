"""The one egress policy for URLs a producer or the console hands us.

A message's ``callback_url``, an app's callback URL, ``image_url`` and the friend-policy URL
are dialled by Switchboard on someone else's behalf. Left open, they let a producer read
what only Switchboard can reach (``http://169.254.169.254/``, ``http://127.0.0.1:6379``, a
database on the private network). So only public unicast addresses are contacted: loopback,
link-local, private, carrier-grade NAT, multicast, unspecified, reserved and documentation
ranges are refused, also when written as an IPv4-mapped/NAT64/6to4 IPv6 address or in one
of the numeric forms ``inet_aton`` accepts (``2130706433``, ``0x7f.1``, ``127.1``).

It is checked twice: ``check_url`` at validation (a 422 naming the field, the host resolved
with a short timeout), and ``session()``'s transport on the address actually dialled, so a
name that resolves elsewhere by the time we connect (DNS rebinding) or a redirect gets no
further. ``SWITCHBOARD_EGRESS_ALLOW`` (comma-separated CIDRs and host names) opens
exceptions, e.g. a receiver on the same host in development. Operator-configured provider
URLs do not pass through here: they use their adapters' own sessions.
"""

from __future__ import annotations

import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

RESOLVE_TIMEOUT = 2.0  # seconds a validation waits for DNS before answering 422
BODY_CAP = 4096  # bytes read from a webhook target's answer; the rest is never read
EXCERPT_LIMIT = 100  # characters of that answer shown in the timeline
MAX_REDIRECTS = 5  # image fetches: each hop is dialled through the same check

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_PRIVATE = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_RESOLVER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="egress-dns")


class EgressRefused(ValueError):
    """A URL or an address the policy refuses; the message says which and why."""


class RefusedConnection(NewConnectionError):
    """Raised by the transport instead of dialling a refused address (a connect error, so
    callers classify it like any connection that was never made: nothing was sent)."""


@dataclass(frozen=True)
class Allow:
    """The exceptions ``SWITCHBOARD_EGRESS_ALLOW`` opens: networks and exact host names."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str) -> Allow:
        """``"127.0.0.1/32, ::1/128, hooks.internal"``; a bad CIDR is an error, not ignored,
        so a typo never silently leaves the policy stricter or looser than meant."""
        networks, hosts = [], set()
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            if "/" in item or _literal(item) is not None:
                try:
                    networks.append(ipaddress.ip_network(item, strict=False))
                except ValueError as exc:
                    raise ValueError(f"SWITCHBOARD_EGRESS_ALLOW: {item!r}: {exc}") from None
            else:
                hosts.add(item.lower().rstrip("."))
        return cls(tuple(networks), frozenset(hosts))

    def admits(self, address: IPAddress) -> bool:
        """Whether an allowed network holds the address (or the IPv4 address it embeds)."""
        forms = {address, _embedded(address)}
        return any(form.version == net.version and form in net
                   for form in forms for net in self.networks)


def configured() -> Allow:
    """The allow list from the settings (read per call: tests and reloads change them)."""
    from shared.settings import get_settings

    return Allow.parse(get_settings().egress_allow or "")


def _embedded(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one carries (mapped, NAT64, 6to4, IPv4-compatible), else
    the address itself: the kernel or a translator dials the embedded one."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or (int(address) >> 32 == 0 and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def _literal(host: str) -> IPAddress | None:
    """The address a host names literally, in any form the resolver would accept as a
    number (``127.1``, ``0x7f.0.0.1``, ``2130706433``, ``[::ffff:7f00:1]``), else None."""
    host = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if not host or not all(c.isalnum() or c == "." for c in host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def refusal(address: IPAddress) -> str | None:
    """Why the policy refuses dialling ``address`` (ignoring the allow list), else None."""
    ip = _embedded(address)
    for reason, hit in (("unspecified", ip.is_unspecified), ("loopback", ip.is_loopback),
                        ("link-local", ip.is_link_local), ("multicast", ip.is_multicast),
                        ("carrier-grade NAT", ip in _CGNAT),
                        ("private", any(ip.version == net.version and ip in net
                                        for net in _PRIVATE))):
        if hit:
            return reason
    if not ip.is_global or address.is_private:
        return "not a public address"
    return None


def check_address(address: IPAddress, allow: Allow | None = None) -> None:
    """Raise ``EgressRefused`` unless ``address`` is public or explicitly allowed."""
    allow = configured() if allow is None else allow
    reason = refusal(address)
    if reason and not allow.admits(address):
        raise EgressRefused(f"{address} is {reason}; Switchboard does not call such "
                            "addresses (SWITCHBOARD_EGRESS_ALLOW opens exceptions)")


def resolve(host: str, port: int, timeout: float = RESOLVE_TIMEOUT) -> list[IPAddress]:
    """Every address ``host`` resolves to, waiting at most ``timeout`` seconds."""
    future = _RESOLVER.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=timeout)
    except FutureTimeout:
        raise EgressRefused(f"host {host!r} did not resolve within {timeout:g} s") from None
    except (OSError, UnicodeError):
        raise EgressRefused(f"host {host!r} does not resolve") from None
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def check_url(url: str, *, dns: bool = True, allow: Allow | None = None) -> None:
    """Raise ``EgressRefused`` for a URL the policy refuses: not http(s), no host, a
    literal refused address, or (with ``dns``) a host name any of whose addresses is
    refused or that does not resolve (a producer would rather hear of a typo now)."""
    allow = configured() if allow is None else allow
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EgressRefused("an http(s) URL with a host is required")
    host = parts.hostname.lower().rstrip(".")
    if host in allow.hosts:
        return
    literal = _literal(host)
    if literal is not None:
        return check_address(literal, allow)
    if dns:
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise EgressRefused("the URL's port is not a number") from None
        for address in resolve(host, port):
            check_address(address, allow)


# --- the transport: the check on the address actually dialled ---------------------------

class _CheckedDial:
    """Mixed into urllib3's connections: resolve once, refuse forbidden addresses, and
    connect to an allowed one by number, so no second lookup can answer differently."""

    host: str  # what urllib3's HTTPConnection provides
    port: int
    timeout: Any
    socket_options: Any

    def _new_conn(self) -> socket.socket:
        """urllib3's hook for opening the socket: the one place every request dials."""
        host = getattr(self, "_dns_host", self.host)
        allow = configured()
        try:
            infos = socket.getaddrinfo(host, self.port, 0, socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc  # type: ignore[arg-type]
        if host.lower().rstrip(".") not in allow.hosts:
            refused = _refusals(infos, allow)
            infos = [info for info in infos if id(info) not in refused]
            if not infos and refused:
                first = next(iter(refused.values()))
                raise RefusedConnection(self, f"egress refused: {first}")  # type: ignore[arg-type]
        return self._dial(infos)

    def _dial(self, infos: list[Any]) -> socket.socket:
        """Connect to the first address that answers, as ``socket.create_connection``."""
        error: OSError | None = None
        for family, kind, proto, _name, address in infos:
            sock = socket.socket(family, kind, proto)
            try:
                for option in self.socket_options or ():
                    sock.setsockopt(*option)
                sock.settimeout(self.timeout)
                sock.connect(address)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        if isinstance(error, socket.timeout):
            raise ConnectTimeoutError(self, f"Connection to {self.host} timed out")
        raise NewConnectionError(self, f"Failed to connect: {error}")  # type: ignore[arg-type]


def _address(info: Any) -> IPAddress:
    """The address of one ``getaddrinfo`` entry (an IPv6 zone id dropped)."""
    return ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])


def _refusals(infos: list[Any], allow: Allow) -> dict[int, str]:
    """The refusal of each forbidden address (by ``id`` of its getaddrinfo entry)."""
    out = {}
    for info in infos:
        try:
            check_address(_address(info), allow)
        except EgressRefused as exc:
            out[id(info)] = str(exc)
    return out


class _HTTPConnection(_CheckedDial, HTTPConnection):
    pass


class _HTTPSConnection(_CheckedDial, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class EgressAdapter(HTTPAdapter):
    """A requests adapter whose every new connection goes through ``_CheckedDial``."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        """requests' pool manager, with our connection classes for both schemes."""
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        """Never reached (``trust_env`` is off, no proxies are set); refused if it were."""
        raise EgressRefused("no proxies for producer URLs: the proxy would dial unchecked")


def session(max_redirects: int = MAX_REDIRECTS) -> requests.Session:
    """A requests session for producer URLs: checked dialling, no proxies from the
    environment, at most ``max_redirects`` redirects (each one dialled through the check)."""
    http = requests.Session()
    http.trust_env = False
    http.max_redirects = max_redirects
    adapter = EgressAdapter()
    http.mount("http://", adapter)
    http.mount("https://", adapter)
    return http


def refused_reason(exc: BaseException) -> str | None:
    """The policy's refusal inside a requests exception (it wraps urllib3's), else None."""
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, RefusedConnection):
            return item._message.removeprefix("egress refused: ")
        stack += [*item.args, getattr(item, "reason", None), item.__cause__, item.__context__]
    return None


def read_capped(response: requests.Response, cap: int = BODY_CAP) -> bytes:
    """At most ``cap`` bytes of a streamed response's body; the rest is never read."""
    chunks, total = [], 0
    for chunk in response.iter_content(chunk_size=1024):
        chunks.append(chunk[: cap - total])
        total += len(chunks[-1])
        if total >= cap:
            break
    return b"".join(chunks)
