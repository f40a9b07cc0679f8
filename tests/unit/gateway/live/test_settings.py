"""gateway.live.settings: a stream's default settings are within the bounds a
client may ask for."""

from __future__ import annotations

from gateway.live.context import MAX_WINDOW_S
from gateway.live.settings import MAX_CONTEXT_AUDIO_S, MAX_UTTERANCE_S, StreamSettings


def test_the_defaults_are_within_the_bounds() -> None:
    settings = StreamSettings()
    assert settings.max_utterance_s <= MAX_UTTERANCE_S < MAX_WINDOW_S
    assert 0.0 <= settings.context_audio_s <= MAX_CONTEXT_AUDIO_S
    assert settings.first_step_s <= settings.step_s <= settings.max_step_s
