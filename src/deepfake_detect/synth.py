"""Synthetic media from real face photos: clips with natural camera motion.

Used by the tests and the demo, which must run with no dataset download.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from deepfake_detect.video import write_video


def packaged_faces() -> dict[str, np.ndarray]:
    """Real face photos that installed packages carry (RGB uint8), keyed by identity."""
    import matplotlib.cbook
    import skimage.data

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        hopper = cv2.imdecode(np.frombuffer(handle.read(), np.uint8), cv2.IMREAD_COLOR_RGB)
    return {
        "astronaut": skimage.data.astronaut(),
        "camera": cv2.cvtColor(skimage.data.camera(), cv2.COLOR_GRAY2RGB),
        "grace_hopper": hopper,
    }


@dataclass(frozen=True)
class Motion:
    """Smooth camera motion over a clip: drift, zoom, roll, lighting drift and sensor noise."""

    shift: float = 0.04
    zoom: float = 0.08
    roll_degrees: float = 3.0
    light: float = 0.1
    noise: float = 2.0


def camera_frames(
    photo: np.ndarray,
    size: tuple[int, int],
    n_frames: int,
    seed: int = 0,
    motion: Motion = Motion(),
) -> Iterator[np.ndarray]:
    """Frames of a virtual camera looking at a still photo, moving smoothly (RGB uint8).

    `size` is (width, height). Each motion parameter follows a slow sinusoid with a random
    phase, so clips differ by seed but move the way a hand-held camera does.
    """
    rng = np.random.default_rng(seed)
    width, height = size
    ph, pw = photo.shape[:2]
    base = max(width / pw, height / ph) * 1.15  # cover the frame with room to move
    phases = rng.uniform(0, 2 * np.pi, size=5)
    for i in range(n_frames):
        t = i / max(1, n_frames - 1)
        wave = np.sin(2 * np.pi * t + phases)
        scale = base * (1 + motion.zoom * wave[0])
        angle = motion.roll_degrees * wave[1]
        dx, dy = motion.shift * width * wave[2], motion.shift * height * wave[3]
        matrix = cv2.getRotationMatrix2D((pw / 2, ph / 2), angle, scale)
        matrix[:, 2] += (width / 2 - pw / 2 + dx, height / 2 - ph / 2 + dy)
        frame = cv2.warpAffine(photo, matrix, (width, height), borderMode=cv2.BORDER_REFLECT)
        gain = 1 + motion.light * wave[4]
        noise = rng.normal(0, motion.noise, frame.shape) if motion.noise else 0
        yield np.clip(frame * gain + noise, 0, 255).astype(np.uint8)


def write_camera_clip(
    photo: np.ndarray,
    path: Path,
    size: tuple[int, int] = (256, 256),
    fps: float = 25.0,
    seconds: float = 2.0,
    seed: int = 0,
    motion: Motion = Motion(),
) -> Path:
    """An H.264 clip of the photo seen by a moving camera."""
    n_frames = max(1, round(fps * seconds))
    return write_video(path, camera_frames(photo, size, n_frames, seed, motion), fps)
