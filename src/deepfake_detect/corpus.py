"""The real people the package ships as face sources (see NOTICE): ten GRID-corpus speakers,
one recording each (CC BY 4.0), and two public-domain White House portraits.

`synth` films them next to the photos that installed packages carry, so a synthetic dataset
holds 15 identities without a download.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

ASSETS = Path(str(files("deepfake_detect") / "assets"))
VIDEO_FOLDER, PORTRAIT_FOLDER = "grid", "portraits"


def corpus_paths() -> list[Path]:
    """The shipped face sources: the GRID videos, then the portraits, each sorted by name."""
    videos = sorted((ASSETS / VIDEO_FOLDER).glob("*.mpg"))
    portraits = sorted((ASSETS / PORTRAIT_FOLDER).glob("*.jpg"))
    return videos + portraits


def corpus_identity(path: Path) -> str:
    """The identity a shipped file shows: `grid_<recording>` for a GRID speaker (one recording
    per speaker), the portrait's name otherwise."""
    return f"grid_{path.stem}" if path.parent.name == VIDEO_FOLDER else path.stem
