"""Uploads to the headless viewer (a real ViserServer, tests/viewer_client.py's page): bad and
oversized files, the guard on transfers as they arrive, the analysis slots, recordings too long,
file names shown as text, and the user's own file kept for export."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
import soundfile as sf
from viewer_client import PART_BYTES, FakePage, open_tab, tone_file, wait_session

from animator.emotion import as_track
from viewer import _viser_compat as compat
from viewer.upload import MAX_UPLOAD_BYTES

pytestmark = pytest.mark.filterwarnings("ignore:Queued a .* on a closed connection")
MIB = 2**20


def test_upload_bad_file_and_disconnect_mid_export_leave_server_healthy(app, tmp_path):
    import soundfile as sf

    page = FakePage(app.server.get_port())
    session = wait_session(app, page)
    old = session.clip
    assert not session.load_upload("notes.txt", b"hello")
    assert not session.load_upload("broken.wav", b"RIFF....not audio")
    assert session.clip is old
    wav = tmp_path / "tone.flac"
    t = np.arange(16_000) / 16_000
    sf.write(wav, 0.3 * np.sin(2 * np.pi * 220 * t), 16_000)
    assert session.load_upload("tone.flac", wav.read_bytes())
    assert session.clip.name == "tone.flac" and abs(session.clip.duration - 1.0) < 0.01

    thread = session.start_export()
    page.close()  # leave mid-export: the export cancels, the server keeps serving
    thread.join(timeout=60)
    assert not thread.is_alive()
    deadline = time.monotonic() + 10
    while session.client.client_id in app.sessions and time.monotonic() < deadline:
        time.sleep(0.05)
    assert session.client.client_id not in app.sessions
    again = FakePage(app.server.get_port())
    try:
        assert wait_session(app, again).frames_sent >= 1
    finally:
        again.close()


def test_upload_over_the_limit_is_refused_while_it_arrives(app):
    """A real transfer over the websocket: the callback never sees an oversized file and the
    server never buffers more than the limit."""
    with open_tab(app) as (page, session):
        arrived: list[int] = []
        session._on_upload = lambda: arrived.append(1)  # what viser calls once a file is whole
        button = compat.element_uuid(session.controls.upload)
        part = bytes(PART_BYTES)

        # Announced as 60 MB: refused at once; the parts the page sends anyway are discarded.
        big = page.start_upload(button, "big.wav", size=60 * MIB)
        for i in range(3):
            page.send_part(button, big, i, part)
        body = page.wait_notification("Upload refused")
        assert body == "big.wav: 60 MB is over the 50 MB limit; upload a shorter recording"
        page.wait_ack(big, 60 * MIB)  # the page's button is told the transfer is over
        assert compat.buffered_upload_bytes(session.client) == 0

        # Announced as exactly 50 MB but in one part more: buffered up to the limit, then
        # dropped whole on the part that passes it.
        liar = page.start_upload(button, "liar.wav", size=MAX_UPLOAD_BYTES, parts=101)
        for i in range(100):
            page.send_part(button, liar, i, part)
        page.wait_ack(liar, MAX_UPLOAD_BYTES)
        assert compat.buffered_upload_bytes(session.client) == MAX_UPLOAD_BYTES
        page.send_part(button, liar, 100, part)
        page.wait_for(
            lambda m: (
                m.get("type") == "NotificationShowMessage"
                and m["props"]["body"].startswith("liar.wav")
            )
        )
        assert compat.buffered_upload_bytes(session.client) == 0
        assert ("Upload refused", "liar.wav: it sent more than the 50 MB it announced") in (
            page.notifications()
        )
        time.sleep(0.3)  # any late callback would have been queued by now
        assert arrived == []


def test_upload_guard_passes_honest_files_one_at_a_time(app):
    with open_tab(app) as (page, session):
        button = compat.element_uuid(session.controls.upload)
        # A small lie is caught on the first part past the announced size.
        liar = page.start_upload(button, "small.wav", size=600_000, parts=4)
        page.send_part(button, liar, 0, bytes(PART_BYTES))
        page.wait_ack(liar, PART_BYTES)
        page.send_part(button, liar, 1, bytes(PART_BYTES))
        assert page.wait_notification("Upload refused") == (
            "small.wav: it sent more than the 0.6 MB it announced"
        )
        assert compat.buffered_upload_bytes(session.client) == 0

        # While one transfer arrives, a second from the same tab is refused.
        first = page.start_upload(button, "first.flac", size=3 * PART_BYTES)
        page.send_part(button, first, 0, bytes(PART_BYTES))
        page.wait_ack(first, PART_BYTES)
        page.start_upload(button, "second.flac", size=1000)
        page.wait_for(
            lambda m: (
                m.get("type") == "NotificationShowMessage"
                and m["props"]["body"].startswith("second.flac")
            )
        )
        assert (
            "Upload refused",
            "second.flac: another upload from this tab is still arriving; wait for it to finish",
        ) in page.notifications()
        page.close()  # the tab goes: its half-received transfer goes with it
        deadline = time.monotonic() + 10
        while compat.buffered_upload_bytes(session.client) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert compat.buffered_upload_bytes(session.client) == 0

    # A real file through the real protocol reaches the session and becomes the clip.
    with open_tab(app) as (page, session):
        button = compat.element_uuid(session.controls.upload)
        page.upload(button, "tone.flac", tone_file(2.0))
        assert page.wait_notification("Speech loaded") == "tone.flac (2.0 s). Press Play."
        assert session.clip.name == "tone.flac"


def test_uploads_are_analysed_one_per_tab_and_two_per_server(app):
    with open_tab(app) as (page, session):
        old = session.clip
        tone = tone_file(1.0)
        with session._analysing:  # this tab is busy analysing
            assert not session.load_upload("tone.flac", tone)
        assert page.wait_notification("Upload refused") == (
            "tone.flac: this tab is still analysing the last upload; wait for it to finish"
        )
        slots = app.analysis_slots
        assert slots.acquire(blocking=False) and slots.acquire(blocking=False)  # two others run
        try:
            assert not slots.acquire(blocking=False), "two analyses at most"
            worker = threading.Thread(target=session.load_upload, args=("tone.flac", tone))
            worker.start()
            assert page.wait_notification("Waiting").startswith("The server is analysing")
            time.sleep(0.3)
            assert worker.is_alive() and session.clip is old  # it waits, it does not decode
        finally:
            slots.release()
        worker.join(timeout=60)
        slots.release()
        assert session.clip.name == "tone.flac"


def test_long_upload_is_refused_from_its_header(app):
    with open_tab(app) as (page, session):
        header = io.BytesIO()
        # 11 minutes of 8 kHz silence (about 10 MB as 8-bit WAV): over the 10-minute limit.
        sf.write(header, np.zeros(8_000 * 660, np.float32), 8_000, format="WAV", subtype="PCM_U8")
        assert not session.load_upload("long.wav", header.getvalue())
        assert page.wait_notification("Upload refused") == (
            "long.wav lasts 11.0 minutes; at most 10.0 minutes can be used here: "
            "use a shorter recording"
        )


def test_uploaded_file_name_is_shown_as_text(app):
    """A name that is HTML (or markdown) shows as the same characters, and stays inert."""
    markdown_it = pytest.importorskip("markdown_it", reason="markdown-it-py renders markdown")
    name = "<img src=x onerror=alert(1)>.wav"
    with open_tab(app) as (page, session):
        page.upload(compat.element_uuid(session.controls.upload), name, tone_file(1.0, "WAV"))
        assert page.wait_notification("Speech loaded").startswith(name)
        shown = session.controls.status.content
        html = markdown_it.MarkdownIt("commonmark", {"html": True}).render(shown)
        assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;.wav" in html


def test_an_uploaded_recording_is_kept_for_export_at_its_own_quality(app, tmp_path):
    """The export muxes the user's own file (44.1 kHz stereo here), not the models' 16 kHz;
    a new upload replaces the old file and a closed tab leaves nothing behind."""
    import soundfile as sf

    from viewer.export import _speech_source

    page = FakePage(app.server.get_port())
    session = wait_session(app, page)
    folder = session._upload_dir
    t = np.arange(44_100) / 44_100
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 330 * t)], 1)
    sf.write(tmp_path / "a.flac", stereo, 44_100)
    try:
        assert session.load_upload("a.flac", (tmp_path / "a.flac").read_bytes())
        first = session.clip.audio.path
        assert first is not None and first.parent == folder and first.is_file()
        perf = session.app.animator.perform(
            session.clip.audio, session.clip.speech_weights, as_track({}), fps=session.clip.fps
        )
        source, args = _speech_source(perf, tmp_path)
        assert source == first and args[args.index("-ar") + 1] == "44100"
        assert args[args.index("-ac") + 1] == "2"
        assert session.load_upload("b.flac", (tmp_path / "a.flac").read_bytes())
        assert not first.exists() and session.clip.audio.path.is_file()
    finally:
        page.close()
    deadline = time.monotonic() + 10
    while folder.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not folder.exists()
