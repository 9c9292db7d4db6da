"""The viewer's audio clock (`viewer.playback.AudioClock`: extrapolated, pulled towards the
page's reports) and the JavaScript that plays the audio in the page."""

from __future__ import annotations

import pytest

from viewer.playback import ERROR_WINDOW, AudioClock, ClockReport, audio_element_js, command_js


def test_clock_keeps_a_bounded_window_of_errors():
    now = [0.0]
    clock = AudioClock(10.0, loop=True, clock=lambda: now[0])
    seq = clock.play()
    for i in range(ERROR_WINDOW + 500):
        now[0] += 0.05
        clock.report(ClockReport(clock.position() - 0.001 * (i % 7), False, seq))
    assert len(clock.errors) == ERROR_WINDOW and clock.reports == ERROR_WINDOW + 500
    assert clock.errors[-1] == pytest.approx(0.001 * ((ERROR_WINDOW + 499) % 7))


def test_audio_clock_follows_reports():
    now = [100.0]
    clock = AudioClock(10.0, loop=True, clock=lambda: now[0])
    seq = clock.play()
    now[0] += 1.0
    assert clock.position() == pytest.approx(1.0)
    assert clock.position(lead=0.1) == pytest.approx(1.1)
    clock.report(ClockReport(0.96, False, seq))  # the page is 40 ms behind: pull halfway
    assert clock.position() == pytest.approx(0.98)
    clock.report(ClockReport(5.0, False, seq - 1))  # stale: before the last command
    assert clock.position() == pytest.approx(0.98)
    clock.report(ClockReport(3.0, False, seq))  # a jump: adopt it
    assert clock.position() == pytest.approx(3.0)
    now[0] += 7.5
    assert clock.position() == pytest.approx(0.5)  # looped
    clock.set_rate(2.0)
    now[0] += 1.0
    assert clock.position() == pytest.approx(2.5)
    clock.pause()
    now[0] += 1.0
    assert clock.position(lead=0.1) == pytest.approx(2.5) and not clock.playing
    clock.set_loop(False)
    clock.seek(9.0)
    clock.play()
    now[0] += 1.0
    assert clock.position() == pytest.approx(10.0) and not clock.playing


def test_javascript_is_self_contained():
    js = audio_element_js(b"RIFF", "uuid-1", loop=True, seq=3)
    assert "data:audio/wav;base64," in js and "uuid-1" in js and "GuiUpdateMessage" in js
    clock = AudioClock(5.0)
    cmd = command_js(clock, clock.play(), seek=None)
    assert "play()" in cmd and "st.seq = 1" in cmd
