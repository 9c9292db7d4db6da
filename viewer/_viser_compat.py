"""Every use of viser's private API in one place, pinned to viser 1.1.1: the WebSocket handshake
hook (Origin check), the per-tab upload guard, the JavaScript channel (both ways: scripts into one
page, and the page's own sends through viser's websocket worker), the share-link handler and the
wire format the tests' fake browser speaks.

viser 1.1.1 offers no public way to do any of these (shared/notes/viser.md). Each function names
the private piece it reaches; after a viser upgrade, this module and tests/test_viewer.py are what
to re-check, and `VISER_VERSION` is what to bump.
"""

from __future__ import annotations

import http
import math
import threading
from collections.abc import Callable
from typing import Any

import msgspec
import viser
from viser import _messages as messages  # message classes; re-exported for the tests
from viser._gui_handles import GuiProgressBarHandle  # not re-exported by viser 1.1.1

from avatar.errors import TalkingAvatarError

__all__ = [
    "VISER_VERSION",
    "GuiProgressBarHandle",
    "buffered_upload_bytes",
    "OriginCheck",
    "check_version",
    "decode_server_frame",
    "element_uuid",
    "encode_client_message",
    "guard_uploads",
    "messages",
    "oversize_reason",
    "page_sender_js",
    "replace_share_handler",
    "run_javascript",
    "start_server",
]

#: The viser release this module was written against (pyproject.toml pins the same).
VISER_VERSION = "1.1.1"

#: Decides a WebSocket handshake: (Origin header or None, Host header or None, the local port
#: the connection arrived on) -> accept?
OriginCheck = Callable[[str | None, str | None, int], bool]

# Installing the handshake hook swaps a module attribute for the time one server binds; two
# servers starting at once must not see each other's hook.
_serve_patch_lock = threading.Lock()


def check_version() -> None:
    """Refuse to run on a viser release other than the one this module was written for."""
    if viser.__version__ != VISER_VERSION:
        raise TalkingAvatarError(
            f"viser {viser.__version__} is installed but the viewer needs viser {VISER_VERSION}; "
            f"run: pip install viser=={VISER_VERSION}"
        )


def start_server(host: str, port: int, *, accept: OriginCheck) -> viser.ViserServer:
    """A `viser.ViserServer` whose WebSocket handshakes are refused (HTTP 403) unless `accept`
    says yes; plain HTTP requests (the page itself) are served as before.

    viser 1.1.1 builds its websockets server inside its own thread (`infra._infra.WebsockServer.
    _background_worker`) with a fixed `process_request`; the only seam is the call to
    `websockets.asyncio.server.serve`, which is wrapped while this server binds, so no
    connection is ever accepted without the check.
    """
    import websockets.asyncio.server as ws_server

    original = ws_server.serve
    calls = []

    def serve(*args: Any, process_request: Any = None, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, process_request=_origin_gate(process_request, accept), **kwargs)

    with _serve_patch_lock:
        ws_server.serve = serve  # type: ignore[misc,assignment]
        try:
            server = viser.ViserServer(host=host, port=port, verbose=False)
        finally:
            ws_server.serve = original  # type: ignore[misc]
    if not calls:
        server.stop()
        raise RuntimeError(
            "viser no longer calls websockets.asyncio.server.serve; update viewer/_viser_compat.py"
        )
    return server


def _origin_gate(inner: Any, accept: OriginCheck) -> Callable[[Any, Any], Any]:
    """websockets' `process_request`: check the Origin of WebSocket upgrades, then hand the
    request to viser's own handler (which serves the page's files)."""

    def process_request(connection: Any, request: Any) -> Any:
        if any(v.lower() == "websocket" for v in request.headers.get_all("Upgrade")):
            origins = request.headers.get_all("Origin")
            hosts = request.headers.get_all("Host")
            port = int(connection.local_address[1])
            ok = len(origins) <= 1 and accept(
                origins[0] if origins else None, hosts[0] if hosts else None, port
            )
            if not ok:
                return connection.respond(
                    http.HTTPStatus.FORBIDDEN,
                    "This page's origin may not drive the talking-avatar viewer; "
                    "start it with --allow-origin ORIGIN to allow it.\n",
                )
        return None if inner is None else inner(connection, request)

    return process_request


def replace_share_handler(
    server: viser.ViserServer, handler: Callable[[int, object], None]
) -> None:
    """Route the page's "share" requests to `handler` instead of viser's, which would open a
    public tunnel through share.viser.studio for whoever asks."""
    ws = server._websock_server
    ws.unregister_handler(messages.ShareUrlRequest)  # drops viser's handler
    ws.register_handler(messages.ShareUrlRequest, handler)


def run_javascript(client: viser.ClientHandle, source: str) -> None:
    """Run JavaScript in one client's page only, now. viser's RunJavascriptMessage on the
    client's own connection: broadcast through the server, it would be stored and replayed to
    every future client."""
    client._websock_connection.queue_message(messages.RunJavascriptMessage(source=source))
    client.flush()


def element_uuid(handle: Any) -> str:
    """The uuid the page uses for a GUI element (its messages carry it)."""
    return str(handle._impl.uuid)


def guard_uploads(
    client: viser.ClientHandle,
    *,
    max_bytes: int,
    admit: Callable[[str, int], str | None],
    refuse: Callable[[str, str], None],
) -> None:
    """Enforce upload limits on one client while the bytes arrive, not after.

    viser buffers every part of a transfer and only then calls `on_upload`; its per-tab upload
    buttons keep that state in the client's GUI (`client.gui._current_file_upload_states`).
    This wraps the client's FileTransferStartUpload and FileTransferPart handlers:

    - a transfer is refused at its start when it announces more than `max_bytes`, when another
      transfer from the same tab is still arriving, or when `admit(filename, size)` gives a
      reason;
    - a transfer that sends more than it announced is dropped with its buffered parts on the
      part that passes the total, so buffered bytes never exceed min(announced, max_bytes);
    - parts of a refused transfer are discarded unread (viser drops parts of unknown transfers).

    `refuse(filename, reason)` runs once per refused transfer (to tell the page). The page's
    upload button is then told the transfer is over, so it can be used again.
    """
    gui = client.gui
    conn = client._websock_connection
    states: dict[str, Any] = gui._current_file_upload_states
    start_upload = gui._handle_file_transfer_start
    take_part = gui._handle_file_transfer_part

    def end_on_page(source_uuid: str, transfer_uuid: str, size: int) -> None:
        # The page keeps its button disabled until the acknowledged bytes reach the total.
        conn.queue_message(
            messages.FileTransferPartAck(
                source_component_uuid=source_uuid,
                transfer_uuid=transfer_uuid,
                transferred_bytes=size,
                total_bytes=size,
            )  # fmt: skip
        )
        client.flush()

    def on_start(client_id: Any, message: messages.FileTransferStartUpload) -> None:
        size = max(int(message.size_bytes), 0)
        reason = oversize_reason(size, max_bytes)
        if reason is None and states:
            reason = "another upload from this tab is still arriving; wait for it to finish"
        if reason is None:
            reason = admit(message.filename, size)
        if reason is None:
            start_upload(client_id, message)
            return
        refuse(message.filename, reason)
        end_on_page(message.source_component_uuid, message.transfer_uuid, size)

    def on_part(client_id: Any, message: messages.FileTransferPart) -> None:
        state = states.get(message.transfer_uuid)
        if state is not None and message.part_index not in state["parts"]:
            allowed = min(int(state["total_bytes"]), max_bytes)
            if state["transferred_bytes"] + len(message.content) > allowed:
                states.pop(message.transfer_uuid, None)  # frees the buffered parts
                refuse(
                    state["filename"],
                    f"it sent more than the {_megabytes(allowed)} it announced",
                )
                if message.source_component_uuid is not None:
                    end_on_page(
                        message.source_component_uuid, message.transfer_uuid, state["total_bytes"]
                    )
                return
        take_part(client_id, message)

    conn.unregister_handler(messages.FileTransferStartUpload, start_upload)
    conn.register_handler(messages.FileTransferStartUpload, on_start)
    conn.unregister_handler(messages.FileTransferPart, take_part)
    conn.register_handler(messages.FileTransferPart, on_part)


def oversize_reason(size: int, max_bytes: int) -> str | None:
    """Why an upload of `size` bytes is refused (over `max_bytes`), or None."""
    if size <= max_bytes:
        return None
    return f"{size / 2**20:.0f} MB is over the {_megabytes(max_bytes)} limit; upload a shorter recording"


def buffered_upload_bytes(client: viser.ClientHandle) -> int:
    """Bytes of unfinished uploads the server holds for one client (tests, benchmarks)."""
    states = client.gui._current_file_upload_states
    return sum(sum(len(p) for p in list(s["parts"].values())) for s in list(states.values()))


def _megabytes(size: int) -> str:
    mb = size / 2**20
    return f"{mb:.0f} MB" if mb >= 10 else f"{math.ceil(mb * 10) / 10:g} MB"


def page_sender_js(state: str) -> str:
    """JavaScript statements that give the page's `state` object a `send(message)`: a message
    into viser's websocket, as viser's own page sends one (the clock reports ride on it).

    viser 1.1.1's page keeps the socket in a Web Worker and posts it `{type: "send", message}`
    (client/src/WebsocketClientWorker.ts, WebsocketInterface.tsx); the statements patch
    `Worker.prototype.postMessage` to remember that worker at the page's next send. Run once per
    page (`state.hooked` guards it)."""
    s = state
    return f"""  if (!{s}.hooked) {{
    // viser's websocket lives in a Web Worker; remember it at the viewer's next send.
    const post = Worker.prototype.postMessage;
    Worker.prototype.postMessage = function (msg, ...rest) {{
      if (msg && msg.type === "send") {s}.worker = this;
      return post.call(this, msg, ...rest);
    }};
    {s}.send = (message) => post.call({s}.worker, {{ type: "send", message }});
    {s}.hooked = true;
  }}"""


# -- the wire format (viser/infra/_infra.py: _message_producer, _message_consumer) --------------


def encode_client_message(message: messages.Message) -> bytes:
    """One message as a browser sends it: msgpack of the message's dict."""
    return msgspec.msgpack.encode(message.as_serializable_dict())


def decode_server_frame(frame: bytes) -> list[dict[str, Any]]:
    """The messages in one server frame, as dicts with a "type" key (binary arrays are left as
    placeholders). Layout: decompressed size (8 bytes, little-endian), compressed size (8
    bytes), zstd-compressed msgpack, then raw binary buffers."""
    import zstandard

    inner_size = int.from_bytes(frame[:8], "little")
    compressed_size = int.from_bytes(frame[8:16], "little")
    inner = zstandard.ZstdDecompressor().decompress(
        frame[16 : 16 + compressed_size], max_output_size=inner_size
    )
    return list(msgspec.msgpack.decode(inner)["messages"])
