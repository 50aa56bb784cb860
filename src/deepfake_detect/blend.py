"""Blending primitives: a face pasted back onto a frame under a deformed, feathered mask.

A self-blend (Self-Blended Images, CVPR 2022) pastes a colour- and geometry-perturbed copy of
a face back onto itself; a face swap pastes another identity's face, aligned by box and
colour-transferred, the same way. Both leave the blending boundary and colour mismatch that
real deepfakes leave. `synth` makes clips with them; `SelfBlendSource` makes pseudo-fakes
from real crops at training time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

import cv2
import numpy as np

from deepfake_detect.faces import Box

# --- manipulation parameters -------------------------------------------------------------------


@dataclass(frozen=True)
class MaskShape:
    """How the blending mask departs from the face's ellipse (or landmark hull).

    Sizes are fractions of the face box; `wobble*` bend the outline radially with 2, 3 and 4
    lobes, `turn` rotates that pattern; `grow` dilates (> 0) or erodes (< 0) the filled
    outline by that fraction of the face's size; `feather` is the blur's sigma; `opacity` is
    how much of the pasted face shows at the mask's centre.
    """

    RANGES: ClassVar[dict[str, tuple[float, float]]] = {
        "width": (0.8, 1.0),
        "height": (0.95, 1.15),
        "lift": (-0.08, 0.04),
        "wobble2": (-0.06, 0.06),
        "wobble3": (-0.05, 0.05),
        "wobble4": (-0.04, 0.04),
        "turn": (0.0, 2 * np.pi),
        "feather": (0.04, 0.12),
        "opacity": (0.75, 1.0),
        "grow": (-0.05, 0.05),
    }
    width: float
    height: float
    lift: float
    wobble2: float
    wobble3: float
    wobble4: float
    turn: float
    feather: float
    opacity: float
    grow: float = 0.0


@dataclass(frozen=True)
class SourceJitter:
    """How the pasted face differs from what it covers: colour, detail, position, compression.

    `red`, `green`, `blue` and `brightness` are added on the 0-255 scale; `detail` < 0 blurs
    and > 0 sharpens; `scale` and `shift_*` move the face (shifts are fractions of the box);
    `colour_transfer` is how far a swapped face's colours are matched to the target's.
    """

    RANGES: ClassVar[dict[str, tuple[float, float]]] = {
        "red": (-20.0, 20.0),
        "green": (-20.0, 20.0),
        "blue": (-20.0, 20.0),
        "brightness": (-20.0, 20.0),
        "contrast": (0.8, 1.2),
        "detail": (-1.0, 1.0),
        "scale": (0.95, 1.05),
        "shift_x": (-0.04, 0.04),
        "shift_y": (-0.04, 0.04),
        "jpeg_quality": (30.0, 90.0),
        "colour_transfer": (0.5, 1.0),
    }
    red: float
    green: float
    blue: float
    brightness: float
    contrast: float
    detail: float
    scale: float
    shift_x: float
    shift_y: float
    jpeg_quality: float
    colour_transfer: float


Params = TypeVar("Params", MaskShape, SourceJitter)


def random_params(kind: type[Params], rng: np.random.Generator) -> Params:
    """Parameters drawn uniformly from their ranges (one manipulated image)."""
    return kind(
        **{name: float(rng.uniform(low, high)) for name, (low, high) in kind.RANGES.items()}
    )


@dataclass(frozen=True)
class Drift(Generic[Params]):
    """Parameters that wander over a clip, each a slow sinusoid inside its range.

    Real deepfakes change smoothly from frame to frame; parameters drawn anew per frame
    would flicker, a cue no real fake gives.
    """

    kind: type[Params]
    centre: np.ndarray
    amplitude: np.ndarray
    phase: np.ndarray
    cycles_per_second: np.ndarray

    @classmethod
    def random(cls, kind: type[Params], rng: np.random.Generator) -> Drift[Params]:
        low, high = np.array(list(kind.RANGES.values())).T
        amplitude = rng.uniform(0.1, 0.3, low.size) * (high - low) / 2
        centre = rng.uniform(low + amplitude, high - amplitude)
        phase = rng.uniform(0, 2 * np.pi, low.size)
        return cls(kind, centre, amplitude, phase, rng.uniform(0.1, 0.4, low.size))

    def at(self, seconds: float) -> Params:
        wave = np.sin(2 * np.pi * self.cycles_per_second * seconds + self.phase)
        values = self.centre + self.amplitude * wave
        return self.kind(**dict(zip(self.kind.RANGES, map(float, values), strict=True)))

    def mean(self) -> Params:
        return self.kind(**dict(zip(self.kind.RANGES, map(float, self.centre), strict=True)))


# --- blending primitives -----------------------------------------------------------------------


def _box_side(box: Box) -> float:
    return float(np.sqrt(max(1.0, box.area)))


# The face region around 5 landmarks (eyes, nose tip, mouth corners; YuNet's, MTCNN's) as
# fixed ratios of typical faces: x in eye distances from the eyes' midpoint, y in
# eyes-to-mouth distances below it. Temples at eye height, cheeks, jaw and chin below the
# mouth (0.65 of the eyes-to-mouth distance), the brows above the eyes: about the hull of
# dlib's 68 points that Self-Blended Images blends under.
FACE_FROM_5 = np.array(
    [[-1.0, 0.0], [-0.95, 0.55], [-0.8, 1.05], [-0.5, 1.45], [0.0, 1.65], [0.5, 1.45],
     [0.8, 1.05], [0.95, 0.55], [1.0, 0.0], [0.8, -0.4], [0.35, -0.55], [-0.35, -0.55],
     [-0.8, -0.4]],
    np.float32,
)  # fmt: skip


def face_region(points: np.ndarray) -> np.ndarray:
    """The face outline (13 x 2) that 5 landmarks imply, in their pixels: FACE_FROM_5 laid
    along the eye line and the eyes-to-mouth line, so it turns and leans with the head."""
    eyes, mouth = points[:2].mean(axis=0), points[3:5].mean(axis=0)
    across, down = points[1] - points[0], mouth - eyes
    return (eyes + FACE_FROM_5[:, :1] * across + FACE_FROM_5[:, 1:] * down).astype(np.float32)


def _outline(box: Box, shape: MaskShape, landmarks: np.ndarray | None) -> np.ndarray:
    """The deformed face outline (N x 2 float32): the face region 5 landmarks imply, or the
    hull of more landmarks, else the box's ellipse."""
    angles = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    if landmarks is not None:
        hull = face_region(landmarks) if len(landmarks) == 5 else landmarks.astype(np.float32)
        points = _densified(cv2.convexHull(hull).reshape(-1, 2))
        centre = points.mean(axis=0)
    else:
        centre = np.array([(box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2])
        radii = np.array([(box.x1 - box.x0) / 2, (box.y1 - box.y0) / 2])
        points = centre + radii * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    offsets = (points - centre) * (shape.width, shape.height)
    theta = np.arctan2(offsets[:, 1], offsets[:, 0]) + shape.turn
    wobble = 1 + sum(
        a * np.sin(k * theta)
        for k, a in ((2, shape.wobble2), (3, shape.wobble3), (4, shape.wobble4))
    )
    lift = (0.0, shape.lift * (box.y1 - box.y0))
    return (centre + lift + offsets * wobble[:, None]).astype(np.float32)


def _densified(polygon: np.ndarray, n_points: int = 72) -> np.ndarray:
    """Points evenly spaced along a closed polygon, so a radial wobble bends it smoothly."""
    closed = np.vstack([polygon, polygon[:1]])
    along = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(closed, axis=0), axis=1))])
    at = np.linspace(0, along[-1], n_points, endpoint=False)
    return np.stack([np.interp(at, along, closed[:, 0]), np.interp(at, along, closed[:, 1])], 1)


def _mask(
    frame_shape: tuple[int, int], box: Box, shape: MaskShape, landmarks: np.ndarray | None = None
) -> np.ndarray:
    """The outline filled and blurred: 1 inside the face, 0 away from it, a soft edge between."""
    mask = np.zeros(frame_shape, np.float32)
    outline = np.round(_outline(box, shape, landmarks) * 16).astype(np.int32)
    cv2.fillPoly(mask, [outline], 1.0, lineType=cv2.LINE_AA, shift=4)
    if (radius := round(abs(shape.grow) * _box_side(box))) > 0:
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        mask = (cv2.dilate if shape.grow > 0 else cv2.erode)(mask, disc)
    sigma = max(0.5, shape.feather * _box_side(box))
    reach = 2 * int(np.ceil(3 * sigma)) + 1  # OpenCV's default reaches 4 sigma for floats
    return cv2.GaussianBlur(mask, (reach, reach), sigma)


def face_mask(
    shape: tuple[int, int],
    box: Box,
    rng: np.random.Generator,
    landmarks: np.ndarray | None = None,
) -> np.ndarray:
    """A random face-region mask (float32 HxW in [0, 1]), deformed and feathered.

    Args:
        shape: (height, width) of the image.
        box: the face box in that image's pixels.
        rng: where the deformation comes from.
        landmarks: 5 points (eyes, nose tip, mouth corners), whose implied face region
            (`face_region`) replaces the ellipse fitted to the box, or more points outlining
            the face (e.g. dlib's 68), whose hull does.
    """
    return _mask(shape, box, random_params(MaskShape, rng), landmarks)


def _jittered(image: np.ndarray, box: Box, jitter: SourceJitter) -> np.ndarray:
    """A copy of the image with colour, contrast, detail, position and JPEG compression changed."""
    pixels = image.astype(np.float32)
    mean = pixels.mean(axis=(0, 1))
    offset = np.array([jitter.red, jitter.green, jitter.blue], np.float32) + jitter.brightness
    pixels = (pixels - mean) * jitter.contrast + mean + offset
    side = _box_side(box)
    if jitter.detail < 0:
        pixels = cv2.GaussianBlur(pixels, (0, 0), -jitter.detail * 0.02 * side + 0.1)
    elif jitter.detail > 0:
        blurred = cv2.GaussianBlur(pixels, (0, 0), 0.01 * side + 0.5)
        pixels = pixels + jitter.detail * (pixels - blurred)
    cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
    move = np.float32(
        [
            [jitter.scale, 0, cx * (1 - jitter.scale) + jitter.shift_x * side],
            [0, jitter.scale, cy * (1 - jitter.scale) + jitter.shift_y * side],
        ]
    )
    height, width = image.shape[:2]
    pixels = cv2.warpAffine(pixels, move, (width, height), borderMode=cv2.BORDER_REFLECT)
    return _jpeg(np.clip(pixels, 0, 255).astype(np.uint8), round(jitter.jpeg_quality))


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    _, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR_RGB)


def _blend(target: np.ndarray, pasted: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Paste by the weights; a grey target gets a grey paste, as colour in a black-and-white
    video is a cue no real fake gives."""
    if _is_grey(target):
        pasted = cv2.cvtColor(cv2.cvtColor(pasted, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    alpha = weights[..., None]
    mixed = alpha * pasted.astype(np.float32) + (1 - alpha) * target.astype(np.float32)
    return np.round(mixed).astype(np.uint8)


def _is_grey(image: np.ndarray, tolerance: float = 4.0) -> bool:
    """Channels equal up to sensor noise (the virtual camera adds noise to each channel)."""
    pixels = image[::4, ::4].astype(np.int16)
    return all(np.abs(pixels[..., c] - pixels[..., 1]).mean() < tolerance for c in (0, 2))


def self_blend_with(
    image: np.ndarray, box: Box, shape: MaskShape, jitter: SourceJitter
) -> tuple[np.ndarray, np.ndarray]:
    """`self_blend` with given (not random) mask shape and jitter, e.g. drifting over a clip;
    the mask follows the box's landmarks when it has them."""
    weights = _mask(image.shape[:2], box, shape, box.points) * shape.opacity
    return _blend(image, _jittered(image, box, jitter), weights), weights


def self_blend(
    image: np.ndarray, box: Box, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A face blended with a perturbed copy of itself (a pseudo-fake) and the blend weights.

    The weights (float32 HxW) are the mask times the blend's opacity: 0 where the image is
    untouched.
    """
    return self_blend_with(
        image, box, random_params(MaskShape, rng), random_params(SourceJitter, rng)
    )


def _aligned(source: np.ndarray, source_box: Box, target_box: Box, size: tuple[int, int]):
    """The source picture moved and scaled so its face box lands on the target's."""
    scale = _box_side(target_box) / _box_side(source_box)
    sx, sy = (source_box.x0 + source_box.x1) / 2, (source_box.y0 + source_box.y1) / 2
    tx, ty = (target_box.x0 + target_box.x1) / 2, (target_box.y0 + target_box.y1) / 2
    move = np.float32([[scale, 0, tx - scale * sx], [0, scale, ty - scale * sy]])
    return cv2.warpAffine(source, move, size, borderMode=cv2.BORDER_REFLECT)


def _colour_transferred(
    image: np.ndarray, reference: np.ndarray, weights: np.ndarray, strength: float
) -> np.ndarray:
    """Match the image's Lab mean and spread inside the mask to the reference's (Reinhard)."""
    inside = weights > 0.5
    if not inside.any():
        return image
    lab = cv2.cvtColor(image.astype(np.float32) / 255, cv2.COLOR_RGB2LAB)
    ref = cv2.cvtColor(reference.astype(np.float32) / 255, cv2.COLOR_RGB2LAB)
    mean, std = lab[inside].mean(axis=0), lab[inside].std(axis=0) + 1e-3
    ref_mean, ref_std = ref[inside].mean(axis=0), ref[inside].std(axis=0) + 1e-3
    matched = (lab - mean) * np.clip(ref_std / std, 0.3, 3.0) + ref_mean
    mixed = lab + strength * (matched - lab)
    rgb = cv2.cvtColor(mixed.astype(np.float32), cv2.COLOR_LAB2RGB)
    return np.clip(rgb * 255, 0, 255).astype(np.uint8)


def face_swap_with(
    target: np.ndarray,
    target_box: Box,
    source: np.ndarray,
    source_box: Box,
    shape: MaskShape,
    jitter: SourceJitter,
) -> tuple[np.ndarray, np.ndarray]:
    """`face_swap` with given (not random) mask shape and jitter, e.g. drifting over a clip."""
    height, width = target.shape[:2]
    weights = _mask((height, width), target_box, shape, target_box.points) * shape.opacity
    pasted = _aligned(source, source_box, target_box, (width, height))
    pasted = _colour_transferred(pasted, target, weights, jitter.colour_transfer)
    return _blend(target, _jittered(pasted, target_box, jitter), weights), weights


def face_swap(
    target: np.ndarray,
    target_box: Box,
    source: np.ndarray,
    source_box: Box,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """The source's face pasted on the target's (aligned by box, colour-transferred, feathered
    under a mask that follows the target box's landmarks when it has them).

    Returns the fake (uint8, the target's size) and the blend weights (float32 HxW).
    """
    shape, jitter = random_params(MaskShape, rng), random_params(SourceJitter, rng)
    return face_swap_with(target, target_box, source, source_box, shape, jitter)


class SelfBlendSource:
    """Training-time pseudo-fakes: each real face crop becomes a self-blend of itself.

    Crops are expected as stage 1 makes them: square, face centred, `margin` of the face's
    size added on each side. Draws are reproducible for a seed; give each data-loader
    worker its own seed, or they will all draw the same sequence.
    """

    def __init__(self, seed: int = 0, margin: float = 0.3) -> None:
        self._rng = np.random.default_rng(seed)
        self._margin = margin

    def __call__(self, crop: np.ndarray, landmarks: np.ndarray | None = None) -> np.ndarray:
        """A pseudo-fake of the crop; its mask is shaped by the face's 5 landmarks (crop
        pixels) when given, else an ellipse in the face's box."""
        height, width = crop.shape[:2]
        inset = 1 + 2 * self._margin
        mx, my = width * self._margin / inset, height * self._margin / inset
        points = None if landmarks is None else tuple(map(tuple, np.asarray(landmarks, float)))
        box = Box(mx, my, width - mx, height - my, landmarks=points)
        return self_blend(crop, box, self._rng)[0]
