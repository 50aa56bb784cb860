"""Face detectors behind one small interface, faces followed across frames, and cropping.

Whole-frame scans run on a downscaled copy (`detect_size` pixels on the longer side); between
scans a known face is searched for in a small region around its last box. Boxes are mapped
back to full resolution, where the crop is taken.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Protocol

import cv2
import numpy as np


@dataclass(frozen=True)
class Box:
    """A face box in pixel coordinates of the full frame, with the detector's confidence."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 1.0

    @property
    def area(self) -> float:
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)

    def scaled(self, factor: float) -> Box:
        return Box(
            self.x0 * factor, self.y0 * factor, self.x1 * factor, self.y1 * factor, self.score
        )

    def iou(self, other: Box) -> float:
        ix = max(0.0, min(self.x1, other.x1) - max(self.x0, other.x0))
        iy = max(0.0, min(self.y1, other.y1) - max(self.y0, other.y0))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0


class FaceDetector(Protocol):
    """Finds faces in one RGB uint8 image; boxes are in that image's pixels."""

    name: str

    def detect(self, image: np.ndarray) -> list[Box]: ...


class DlibDetector:
    """dlib's HOG + linear SVM frontal face detector (the detector of FF++ and DeepfakeBench)."""

    name = "dlib"

    def __init__(self, upsample: int = 0) -> None:
        import dlib

        self._detector = dlib.get_frontal_face_detector()
        self._upsample = upsample

    def detect(self, image: np.ndarray) -> list[Box]:
        # Greyscale: HOG on colour takes the strongest gradient of three channels, for a
        # quarter more time and no face more on FF++, DFDC and GRID. The conversion also
        # gives dlib the contiguous rows it assumes (PyAV pads the rows of 854-px frames).
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        rects, scores, _ = self._detector.run(grey, self._upsample, 0.0)
        return [
            Box(r.left(), r.top(), r.right(), r.bottom(), float(s))
            for r, s in zip(rects, scores, strict=True)
        ]


class OpenCVDetector:
    """OpenCV's Haar cascade: always installed, weaker than dlib; a fallback."""

    name = "opencv"

    def __init__(self) -> None:
        cascade = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(cascade)

    def detect(self, image: np.ndarray) -> list[Box]:
        grey = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
        rects, _, weights = self._cascade.detectMultiScale3(
            grey, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24), outputRejectLevels=True
        )
        return [
            Box(x, y, x + w, y + h, float(s))
            for (x, y, w, h), s in zip(rects, np.ravel(weights), strict=True)
        ]


MAX_UPSCALE = 2.0
REGION_CONTEXT = 2.0  # a followed face is searched for in a square this many times its size,
REGION_FACE_PX = 90  # scaled so that the face is this wide (dlib's window is 80 px)
SAME_FACE_IOU = 0.3  # a scanned box overlapping a followed face this much is that face

DETECTORS: dict[str, type] = {"dlib": DlibDetector, "opencv": OpenCVDetector}


def create_detector(name: str) -> FaceDetector:
    """Build a detector by name; an unknown name fails with the list of known ones."""
    if name not in DETECTORS:
        raise ValueError(f"unknown face detector {name!r}; known: {', '.join(DETECTORS)}")
    return DETECTORS[name]()


def detect_faces(
    detector: FaceDetector, image: np.ndarray, detect_size: int = 640, retry_larger: bool = True
) -> list[Box]:
    """Detect on a copy resized to `detect_size` on its longer side; boxes in full-frame pixels.

    Small frames are enlarged (up to MAX_UPSCALE times) because HOG misses faces under ~80 px.

    When nothing is found, the frame is larger and `retry_larger` is set, try once more at
    twice that size: faces that fill little of a 1080p frame (DFDC's full-body shots) are
    too small at 640 px. Boxes are clipped to the frame and returned largest first.
    """
    longest = max(image.shape[:2])
    boxes = _detect_scaled(detector, image, min(MAX_UPSCALE, detect_size / longest))
    if not boxes and retry_larger and longest > detect_size:
        boxes = _detect_scaled(detector, image, min(2 * detect_size, longest) / longest)
    return sorted(boxes, key=lambda b: b.area, reverse=True)


def detect_near(detector: FaceDetector, image: np.ndarray, last: Box) -> Box | None:
    """Find again a face last seen at `last`: the box best overlapping it in a region around it.

    The region (REGION_CONTEXT times the face) is cut from the full-resolution frame and
    scaled so the face is REGION_FACE_PX wide: a fraction of a whole-frame scan's pixels,
    and small faces are seen at full detail.
    """
    height, width = image.shape[:2]
    face_side = max(last.x1 - last.x0, last.y1 - last.y0, 1.0)
    half = face_side * REGION_CONTEXT / 2.0
    cx, cy = (last.x0 + last.x1) / 2.0, (last.y0 + last.y1) / 2.0
    x0, y0 = max(0, round(cx - half)), max(0, round(cy - half))
    x1, y1 = min(width, round(cx + half)), min(height, round(cy + half))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    found = _detect_scaled(detector, image[y0:y1, x0:x1], REGION_FACE_PX / face_side)
    shifted = [Box(b.x0 + x0, b.y0 + y0, b.x1 + x0, b.y1 + y0, b.score) for b in found]
    best = max(shifted, key=last.iou, default=None)
    return best if best is not None and best.iou(last) > 0 else None


def detect_in_frames(
    detector: FaceDetector,
    images: Iterable[np.ndarray],
    detect_size: int = 640,
    scan_every: int = 8,
    max_faces: int | None = None,
) -> Iterator[list[Box]]:
    """The faces in consecutive sampled frames of one video, largest first in each frame,
    yielded frame by frame as the images come (a long video is never held whole).

    The whole frame is scanned every `scan_every` frames to find faces, and on every frame
    while no face is known, then with a retry at a larger size. In between, each known face
    is searched for near its last box with `detect_near`, which costs a fraction of a scan;
    a face missed that way (turned away, occluded) is still looked for near where it was
    for `scan_every` frames. `max_faces` keeps the largest few.
    """
    known: dict[int, tuple[Box, int]] = {}  # face -> (last box, frames missed since)
    new_faces = itertools.count()
    for index, image in enumerate(images):
        found: dict[int, Box] = {}
        scan = index % scan_every == 0 or not known
        if scan:
            boxes = detect_faces(detector, image, detect_size, retry_larger=not known)
            _add_scanned(boxes, known, found, new_faces)
        for face, (last, _) in known.items():
            again = None if face in found else detect_near(detector, image, last)
            if again and all(again.iou(box) < SAME_FACE_IOU for box in found.values()):
                found[face] = again
        if not scan and any(face not in found for face in known):
            boxes = detect_faces(detector, image, detect_size, retry_larger=False)
            _add_scanned(boxes, known, found, new_faces)
        kept = sorted(found, key=lambda face: found[face].area, reverse=True)[:max_faces]
        missed = {face: (box, misses + 1) for face, (box, misses) in known.items()
                  if face not in found and misses < scan_every}  # fmt: skip
        known = missed | {face: (found[face], 0) for face in kept}
        yield [found[face] for face in kept]


def _add_scanned(
    boxes: list[Box],
    known: dict[int, tuple[Box, int]],
    found: dict[int, Box],
    new_faces: Iterator[int],
) -> None:
    """Add a scan's boxes to this frame's faces: each is the known face it overlaps best (not
    yet found), or a new face; a box overlapping a face already found is that face again."""
    for box in boxes:
        if any(box.iou(other) >= SAME_FACE_IOU for other in found.values()):
            continue
        overlaps = [(box.iou(last), face) for face, (last, _) in known.items() if face not in found]
        overlap, face = max(overlaps, default=(0.0, -1))
        found[face if overlap >= SAME_FACE_IOU else next(new_faces)] = box


def _detect_scaled(detector: FaceDetector, image: np.ndarray, scale: float) -> list[Box]:
    """Detect on the image resized by `scale`; boxes in the image's pixels, clipped to it."""
    height, width = image.shape[:2]
    resized = image
    if scale != 1.0:
        # bilinear: 0.3 ms against area's 2.5 ms for 854x480 to 640x360, and the detector
        # finds the same faces (crops, which the model sees, keep area interpolation)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        resized = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    boxes = [box.scaled(1.0 / scale) for box in detector.detect(resized)]
    clipped = [
        replace(b, x0=max(0.0, b.x0), y0=max(0.0, b.y0), x1=min(width, b.x1), y1=min(height, b.y1))
        for b in boxes
    ]
    return [b for b in clipped if b.area > 0]


def track_faces(boxes_per_frame: list[list[Box]], min_iou: float = 0.1) -> list[list[int]]:
    """Give each box a face index that follows the same person from frame to frame.

    Boxes are matched greedily to the last box of each track by IoU; an unmatched box starts
    a new track. Tracks are then numbered by their mean area, largest first, so face 0 is
    the most prominent person. Returns, per frame, the face index of each box.
    """
    last_box: list[Box] = []
    raw_ids: list[list[int]] = []
    for boxes in boxes_per_frame:
        pairs = sorted(
            (
                (box.iou(last_box[t]), b, t)
                for b, box in enumerate(boxes)
                for t in range(len(last_box))
            ),
            reverse=True,
        )
        ids = [-1] * len(boxes)
        taken: set[int] = set()
        for overlap, b, t in pairs:
            if overlap < min_iou:
                break
            if ids[b] == -1 and t not in taken:
                ids[b] = t
                taken.add(t)
        for b, box in enumerate(boxes):
            if ids[b] == -1:
                ids[b] = len(last_box)
                last_box.append(box)
            else:
                last_box[ids[b]] = box
        raw_ids.append(ids)
    areas: dict[int, list[float]] = {}
    for boxes, ids in zip(boxes_per_frame, raw_ids, strict=True):
        for box, track in zip(boxes, ids, strict=True):
            areas.setdefault(track, []).append(box.area)
    order = sorted(areas, key=lambda t: -float(np.mean(areas[t])))
    renumber = {track: rank for rank, track in enumerate(order)}
    return [[renumber[t] for t in ids] for ids in raw_ids]


def crop_face(image: np.ndarray, box: Box, margin: float, size: int) -> np.ndarray:
    """A square crop around the box, `margin` of its size added on each side, black-padded at
    the frame's borders, resized to `size` x `size`."""
    side = max(box.x1 - box.x0, box.y1 - box.y0) * (1.0 + 2.0 * margin)
    cx, cy = (box.x0 + box.x1) / 2.0, (box.y0 + box.y1) / 2.0
    x0, y0 = round(cx - side / 2.0), round(cy - side / 2.0)
    side_px = max(1, round(side))
    height, width = image.shape[:2]
    patch = np.zeros((side_px, side_px, 3), dtype=np.uint8)
    sx0, sy0 = max(0, x0), max(0, y0)
    sx1, sy1 = min(width, x0 + side_px), min(height, y0 + side_px)
    if sx1 > sx0 and sy1 > sy0:
        patch[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return _resize(patch, size, size)


def crop_rectangle(image: np.ndarray, box: Box, margin: float) -> np.ndarray:
    """The box grown by `margin` of its width on the left and right and of its height above and
    below, clipped to the frame: the unpadded crop published detectors were trained on."""
    height, width = image.shape[:2]
    grow_x, grow_y = (box.x1 - box.x0) * margin, (box.y1 - box.y0) * margin
    x0, y0 = max(0, math.floor(box.x0 - grow_x)), max(0, math.floor(box.y0 - grow_y))
    x1 = min(width, max(x0 + 1, math.ceil(box.x1 + grow_x)))
    y1 = min(height, max(y0 + 1, math.ceil(box.y1 + grow_y)))
    return image[y0:y1, x0:x1]


def crop_face_stretched(image: np.ndarray, box: Box, margin: float, size: int) -> np.ndarray:
    """`crop_rectangle` stretched to `size` x `size` bilinearly, as Self-Blended Images does."""
    return cv2.resize(crop_rectangle(image, box, margin), (size, size))


def crop_face_padded(image: np.ndarray, box: Box, margin: float, size: int) -> np.ndarray:
    """`crop_rectangle` with its longer side resized to `size` (area when shrinking, bicubic
    when enlarging) and centred on black, as the DFDC winner does."""
    patch = crop_rectangle(image, box, margin)
    height, width = patch.shape[:2]
    if width > height:
        scale = size / width
        new_w, new_h = size, max(1, int(height * scale))
    else:
        scale = size / height
        new_w, new_h = max(1, int(width * scale)), size
    interpolation = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = cv2.resize(
        patch, (new_w, new_h), interpolation=interpolation
    )
    return canvas


# How a face box becomes a crop: a square around it (this project's), or the published
# detectors' rectangle, stretched or padded to a square.
CROP_SHAPES = {"square": crop_face, "stretch": crop_face_stretched, "pad": crop_face_padded}


def letterbox(image: np.ndarray, size: int) -> np.ndarray:
    """The whole frame scaled to fit `size` x `size`, centred on black (used without detection)."""
    height, width = image.shape[:2]
    scale = size / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = _resize(image, new_w, new_h)
    return canvas


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    shrinking = width < image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)
