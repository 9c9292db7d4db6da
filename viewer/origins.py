"""Which web pages may drive the viewer: the Origin check of its WebSocket handshake.

A page from any site open in the same browser can open `ws://127.0.0.1:8080`; browsers stamp
such a connection with the page's origin, so the viewer accepts only its own page (served on the
port it listens on, under a loopback name or the address it was told to listen on) and the
origins the person names with `--allow-origin` (a reverse proxy, a LAN name). A connection
without an Origin header does not come from a web page (scripts, the tests' client) and is
accepted: it could as well send any header it likes.

Names are not trusted for the own-page rule: a site that points its DNS name at 127.0.0.1 (DNS
rebinding) carries its own name in the Origin, which is none of ours. With a wildcard listen
address (0.0.0.0, ::) the page may also be reached by an IP address of this machine: an
IP-literal origin is accepted when it equals the Host the browser connected to, since only a page
served from that very address and port (this viewer) can carry it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from avatar.errors import TalkingAvatarError

#: Names under which this machine's browser reaches a viewer on loopback.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(origin: str) -> str:
    """An origin as `scheme://host:port` (lower case, explicit port, IPv6 in brackets).

    Raises:
        TalkingAvatarError: not an http(s) origin without path, e.g. `http://studio.lan:8080`.
    """
    parsed = _parse(origin)
    if parsed is None:
        raise TalkingAvatarError(
            f"--allow-origin {origin!r} is not an origin; give scheme://host[:port], "
            "e.g. http://studio.lan:8080"
        )
    scheme, host, port = parsed
    return f"{scheme}://{_host_text(host)}:{port}"


def _parse(origin: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) origin, None for anything else."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host or parts.path not in ("", "/"):
        return None
    if parts.query or parts.fragment or parts.username or parts.password:
        return None
    return scheme, host, port if port is not None else _DEFAULT_PORTS[scheme]


def _host_text(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class OriginPolicy:
    """The viewer's rule for WebSocket origins.

    Attributes:
        host: the address the viewer listens on (as given to --host).
        allowed: extra origins from --allow-origin, normalized (`normalize_origin`).
    """

    host: str = "127.0.0.1"
    allowed: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_flags(cls, host: str, allow_origins: tuple[str, ...] | list[str]) -> OriginPolicy:
        """Validate the --allow-origin values (raises TalkingAvatarError on a bad one)."""
        return cls(host=host, allowed=frozenset(normalize_origin(o) for o in allow_origins))

    def accepts(self, origin: str | None, host_header: str | None, port: int) -> bool:
        """Whether a handshake with this Origin (None: no header) may connect to the viewer
        listening on `port`, reached as `host_header` (the Host the browser sent)."""
        if origin is None:
            return True  # not a browser page: nothing to protect against here
        parsed = _parse(origin)
        if parsed is None:
            return False  # "null" (sandboxed frames, file: pages) and anything malformed
        scheme, host, origin_port = parsed
        if f"{scheme}://{_host_text(host)}:{origin_port}" in self.allowed:
            return True
        if scheme != "http" or origin_port != port:
            return False  # the viewer serves its page over plain http on its own port
        listen = self.host.strip("[]").lower()
        if host in LOOPBACK_NAMES and (listen in LOOPBACK_NAMES or listen in _WILDCARD_HOSTS):
            return True
        if host == listen:
            return True
        if listen in _WILDCARD_HOSTS and _is_ip(host) and host_header is not None:
            return _parse(f"http://{host_header}") == (scheme, host, origin_port)
        return False
