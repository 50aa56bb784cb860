"""Make docs/synth.png: a packaged face, its blending mask, its self-blend and a face swap.

.venv/bin/python docs/make_synth_figure.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from deepfake_detect.blend import face_swap, self_blend
from deepfake_detect.faces import Box
from deepfake_detect.synth import packaged_face_sources

OUTPUT = Path(__file__).resolve().parent / "synth.png"
SEED = 4


def around(image: np.ndarray, box: Box, faces_across: float = 2.2) -> np.ndarray:
    """A square view centred on the face, `faces_across` face sizes wide."""
    half = faces_across * max(box.x1 - box.x0, box.y1 - box.y0) / 2
    cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
    y0, x0 = max(0, round(cy - half)), max(0, round(cx - half))
    return image[y0 : round(cy + half), x0 : round(cx + half)]


def main() -> None:
    faces = {source.identity: source for source in packaged_face_sources()}
    target, source = faces["astronaut"], faces["grace_hopper"]
    blended, weights = self_blend(target.image, target.box, np.random.default_rng(SEED))
    swapped, _ = face_swap(
        target.image, target.box, source.image, source.box, np.random.default_rng(SEED)
    )
    panels = {
        "original": target.image,
        "blending mask": weights,
        "self-blend (pseudo-fake)": blended,
        "face swap (Grace Hopper)": swapped,
    }
    figure, axes = plt.subplots(1, len(panels), figsize=(10, 2.9), layout="constrained")
    for axis, (title, image) in zip(axes, panels.items(), strict=True):
        axis.imshow(
            around(image, target.box), cmap="gray", vmin=0, vmax=1 if image.ndim == 2 else None
        )
        axis.set_title(title, fontsize=10)
        axis.axis("off")
    figure.savefig(OUTPUT, dpi=80)
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
