"""Where the real media live: ``../shared/data`` beside the repository (never in it), or
``$GRIDWATCH_SHARED_DATA``."""

from __future__ import annotations

import os
from pathlib import Path

_BESIDE_REPOSITORY = Path(__file__).resolve().parents[2] / "shared" / "data"
SHARED_DATA = Path(os.environ.get("GRIDWATCH_SHARED_DATA", _BESIDE_REPOSITORY))
FIRE_SMOKE = SHARED_DATA / "fire-smoke"
"""The real fire/smoke images: trained on ``train/``, measured on ``val/``."""
