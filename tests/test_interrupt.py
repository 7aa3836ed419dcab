"""deploypipe.interrupt: inside a build a first signal waits for the next safe point (so it never
raises inside a callback C++ is running), a second one stops at once, and outside a build a signal
interrupts as usual."""

from __future__ import annotations

import signal

import pytest

from deploypipe import interrupt


@pytest.fixture(autouse=True)
def clean_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(interrupt, "_state", interrupt._Signals())


def test_first_signal_in_a_deferred_section_waits_for_the_checkpoint(capsys: pytest.CaptureFixture[str]) -> None:
    with interrupt.deferred():
        interrupt._handler(signal.SIGINT, None)  # what Python calls on Ctrl-C: no exception here
        assert interrupt.received() == "SIGINT"
        assert "next safe point" in capsys.readouterr().err
        with pytest.raises(KeyboardInterrupt):
            interrupt.checkpoint()


def test_second_signal_stops_at_once_and_keeps_the_first_name() -> None:
    with interrupt.deferred():
        interrupt._handler(signal.SIGTERM, None)
        with pytest.raises(KeyboardInterrupt):
            interrupt._handler(signal.SIGINT, None)
    assert interrupt.received() == "SIGTERM"


def test_outside_a_deferred_section_a_signal_interrupts_as_usual() -> None:
    interrupt.checkpoint()  # nothing pending: no-op
    with pytest.raises(KeyboardInterrupt):
        interrupt._handler(signal.SIGINT, None)


def test_build_progress_messages_are_checkpoints(tiny_onnx, tmp_path) -> None:
    """A signal recorded during a build surfaces at the build's next progress message, before
    anything is switched in: the output folder gets no artifact."""
    from deploypipe.api import BuildConfig, build

    seen: list[str] = []

    def progress(message: str) -> None:
        seen.append(message)
        if len(seen) == 2:
            interrupt._handler(signal.SIGINT, None)

    with pytest.raises(KeyboardInterrupt):
        build(BuildConfig(model=str(tiny_onnx), output=tmp_path / "out", name="a"), progress)
    assert len(seen) == 2
    assert not (tmp_path / "out" / "a").exists()
