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
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from deepfake_detect.errors import DeepfakeDetectError
from deepfake_detect.files import file_sha256

Points = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Box:
    """A face box in pixel coordinates of the full frame, with the detector's confidence.

    `landmarks`, from detectors that give them (YuNet), are 5 points in the same pixels: the
    eye on the image's left, the other eye, the nose tip, the mouth corner on the image's
    left, the other mouth corner.
    """

    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 1.0
    landmarks: Points | None = None

    @property
    def area(self) -> float:
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)

    @property
    def points(self) -> np.ndarray | None:
        """The landmarks as a float32 (5, 2) array, or None."""
        return None if self.landmarks is None else np.array(self.landmarks, np.float32)

    def scaled(self, factor: float) -> Box:
        return self.moved(factor, 0.0, 0.0)

    def moved(self, factor: float, dx: float, dy: float) -> Box:
        """The box (and its landmarks) scaled by `factor`, then shifted by (dx, dy)."""
        points = None
        if self.landmarks is not None:
            points = tuple((x * factor + dx, y * factor + dy) for x, y in self.landmarks)
        return Box(
            self.x0 * factor + dx,
            self.y0 * factor + dy,
            self.x1 * factor + dx,
            self.y1 * factor + dy,
            self.score,
            points,
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


class DetectorModelError(DeepfakeDetectError):
    """A packaged detector model that is missing or not the file shipped; one line."""


ASSETS = Path(__file__).resolve().parent / "assets"
YUNET_MODEL = "models/face_detection_yunet_2026may.onnx"


def packaged_model(relative: str) -> Path:
    """The path of a model file shipped in the package's assets, checked against SHA256SUMS.

    Raises:
        DetectorModelError: the file is missing, or its SHA-256 is not the one shipped.
    """
    path = ASSETS / relative
    sums = ASSETS / "SHA256SUMS"
    expected = {}
    if sums.is_file():
        for line in sums.read_text(encoding="utf-8").splitlines():
            digest, _, name = line.strip().partition("  ")
            expected[name] = digest
    if not path.is_file():
        raise DetectorModelError(f"{path}: face detector model missing; reinstall deepfake-detect")
    digest = file_sha256(path)
    if digest != expected.get(relative):
        raise DetectorModelError(
            f"{path}: face detector model altered (SHA-256 {digest[:12]}..., expected "
            f"{expected.get(relative, 'a listed checksum')[:12]}...); reinstall deepfake-detect"
        )
    return path


class YuNetDetector:
    """YuNet (OpenCV Zoo, MIT): a small CNN giving a box, 5 landmarks and a score per face.

    Run through `cv2.FaceDetectorYN` on an input of any size; unlike HOG it is not limited to
    frontal faces (bench/faces.py measures both on turned heads).
    """

    name = "yunet"
    gives_landmarks = True

    def __init__(self, score_threshold: float = 0.6, nms_threshold: float = 0.3) -> None:
        model = str(packaged_model(YUNET_MODEL))
        self._size = (320, 320)
        self._net = cv2.FaceDetectorYN.create(
            model, "", self._size, score_threshold, nms_threshold, 5000
        )

    def detect(self, image: np.ndarray) -> list[Box]:
        height, width = image.shape[:2]
        if (width, height) != self._size:
            self._size = (width, height)
            self._net.setInputSize(self._size)
        _, faces = self._net.detect(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if faces is None:
            return []
        return [
            Box(
                float(x),
                float(y),
                float(x + w),
                float(y + h),
                float(row[14]),
                tuple((float(row[i]), float(row[i + 1])) for i in range(4, 14, 2)),
            )
            for row in faces
            for x, y, w, h in [row[:4]]
        ]


MAX_UPSCALE = 2.0
REGION_CONTEXT = 2.0  # a followed face is searched for in a square this many times its size,
REGION_FACE_PX = 90  # scaled so that the face is this wide (dlib's window is 80 px)
SAME_FACE_IOU = 0.3  # a scanned box overlapping a followed face this much is that face

DETECTORS: dict[str, type] = {
    "yunet": YuNetDetector,
    "dlib": DlibDetector,
    "opencv": OpenCVDetector,
}


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
    shifted = [b.moved(1.0, x0, y0) for b in found]
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
    yielded frame by frame as the images come (`follow_faces` without the identities)."""
    for faces in follow_faces(detector, images, detect_size, scan_every, max_faces):
        yield [box for _, box in faces]


def follow_faces(
    detector: FaceDetector,
    images: Iterable[np.ndarray],
    detect_size: int = 640,
    scan_every: int = 8,
    max_faces: int | None = None,
) -> Iterator[list[tuple[int, Box]]]:
    """The faces in consecutive sampled frames of one video as (identity, box), largest first
    in each frame, yielded frame by frame as the images come (a long video is never held).

    The whole frame is scanned every `scan_every` frames to find faces, and on every frame
    while no face is known, then with a retry at a larger size. In between, each known face
    is searched for near its last box with `detect_near`, which costs a fraction of a scan;
    a face missed that way (turned away, occluded) is still looked for near where it was
    for `scan_every` frames. `max_faces` keeps the largest few.

    The schedule is the tracker: a face followed by `detect_near` keeps its identity, and a
    scanned box takes the identity of the face it overlaps (SAME_FACE_IOU), also of one lost
    earlier, so a person who turns away and back stays one person. Identities count up
    from 0 in order of first appearance.
    """
    known: dict[int, tuple[Box, int]] = {}  # face -> (last box, frames missed since)
    lost: dict[int, Box] = {}  # faces no longer followed -> their last box
    new_faces = itertools.count()
    for index, image in enumerate(images):
        found: dict[int, Box] = {}
        scan = index % scan_every == 0 or not known
        if scan:
            boxes = detect_faces(detector, image, detect_size, retry_larger=not known)
            _add_scanned(boxes, known, lost, found, new_faces)
        for face, (last, _) in known.items():
            again = None if face in found else detect_near(detector, image, last)
            if again and all(again.iou(box) < SAME_FACE_IOU for box in found.values()):
                found[face] = again
        if not scan and any(face not in found for face in known):
            boxes = detect_faces(detector, image, detect_size, retry_larger=False)
            _add_scanned(boxes, known, lost, found, new_faces)
        kept = sorted(found, key=lambda face: found[face].area, reverse=True)[:max_faces]
        missed = {
            face: (box, misses + 1)
            for face, (box, misses) in known.items()
            if face not in found and misses < scan_every
        }
        followed = missed | {face: (found[face], 0) for face in kept}
        seen = {face: box for face, (box, _) in known.items()} | found
        lost = {f: b for f, b in (lost | seen).items() if f not in followed}
        known = followed
        yield [(face, found[face]) for face in kept]


def _add_scanned(
    boxes: list[Box],
    known: dict[int, tuple[Box, int]],
    lost: dict[int, Box],
    found: dict[int, Box],
    new_faces: Iterator[int],
) -> None:
    """Add a scan's boxes to this frame's faces: each is the known face it overlaps best (not
    yet found), else the lost face it overlaps best, else a new face; a box overlapping a
    face already found is that face again."""
    for box in boxes:
        if any(box.iou(other) >= SAME_FACE_IOU for other in found.values()):
            continue
        followed = [(last, face) for face, (last, _) in known.items() if face not in found]
        earlier = [(last, face) for face, last in lost.items() if face not in found]
        matches = [
            face
            for candidates in (followed, earlier)
            for overlap, face in [max(((box.iou(b), f) for b, f in candidates), default=(0, -1))]
            if overlap >= SAME_FACE_IOU
        ]
        found[matches[0] if matches else next(new_faces)] = box


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


# Where aligned crops put the 5 landmarks, as fractions of the face square (the crop less its
# margins): the ArcFace template (112 px) made left-right symmetric, so the eyes are level.
ALIGN_TEMPLATE = np.array(
    [[0.3418, 0.4615], [0.6582, 0.4615], [0.5000, 0.6405], [0.3727, 0.8240], [0.6273, 0.8240]],
    np.float32,
)


def template_points(size: int, margin: float) -> np.ndarray:
    """The template's 5 points in a `size` px crop whose face square has `margin` of its side
    added on each side (as `crop_face` adds around the box)."""
    return ((ALIGN_TEMPLATE + margin) * size / (1 + 2 * margin)).astype(np.float32)


def alignment(points: np.ndarray, size: int, margin: float) -> np.ndarray | None:
    """The similarity transform (2x3, frame pixels -> crop pixels) that best puts the 5 points
    on the template (least median of squares, so one stray landmark does not tilt it), or
    None when the points do not determine one."""
    matrix, _ = cv2.estimateAffinePartial2D(
        points.astype(np.float32), template_points(size, margin), method=cv2.LMEDS
    )
    return matrix


ALIGN_REFINE_SIZE = 256


def refine_alignment(
    detector: FaceDetector, image: np.ndarray, matrix: np.ndarray, size: int, margin: float
) -> np.ndarray:
    """The alignment fitted again to landmarks found on the face already aligned.

    YuNet's landmarks lean towards upright on a rolled face, the more so the smaller it is
    (a face rolled 20 degrees read as 8 to 16), and off by a few pixels on small faces. Seen
    again upright at ALIGN_REFINE_SIZE px, the face gives landmarks that level it to within
    a few degrees (bench/faces.py).
    """
    zoom = ALIGN_REFINE_SIZE / size
    upright = matrix * zoom  # the same alignment into a crop ALIGN_REFINE_SIZE px wide
    found = [
        b
        for b in detector.detect(crop_aligned(image, upright, ALIGN_REFINE_SIZE))
        if b.landmarks is not None
    ]
    if not found:
        return matrix
    points = max(found, key=lambda b: b.area).points
    in_frame = cv2.transform(points[None], cv2.invertAffineTransform(upright))[0]
    refined = alignment(in_frame, size, margin)
    return matrix if refined is None else refined


def crop_aligned(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The `size` x `size` crop a similarity transform (frame -> crop pixels) cuts, black
    beyond the frame. A large face is first shrunk by area averaging (as the other crops
    are), so the warp does not alias."""
    scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64)
    inverse = cv2.invertAffineTransform(matrix)
    source = corners @ inverse[:, :2].T + inverse[:, 2]
    height, width = image.shape[:2]
    x0, y0 = (max(0, math.floor(v)) for v in source.min(axis=0))
    x1 = min(width, math.ceil(source[:, 0].max()) + 1)
    y1 = min(height, math.ceil(source[:, 1].max()) + 1)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((size, size, 3), np.uint8)
    region = image[y0:y1, x0:x1]
    shrink = min(1.0, 2.0 * scale)  # keep twice the crop's resolution for the warp
    moved = matrix.astype(np.float64).copy()
    moved[:, 2] += moved[:, :2] @ np.array([x0, y0], np.float64)
    if shrink < 1.0:
        shape = (max(1, round((x1 - x0) * shrink)), max(1, round((y1 - y0) * shrink)))
        region = cv2.resize(region, shape, interpolation=cv2.INTER_AREA)
        enlarge = np.array([(x1 - x0) / shape[0], (y1 - y0) / shape[1]])
        # a pixel centre of the shrunk region, back in the region: (p + 0.5) * enlarge - 0.5
        moved[:, 2] += moved[:, :2] @ (0.5 * enlarge - 0.5)
        moved[:, :2] *= enlarge
    return cv2.warpAffine(
        region,
        moved,
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )


@dataclass
class AlignmentSmoother:
    """Smooths one face track's alignments so its aligned crops do not jitter.

    Each new transform, as scale, angle and the frame point the crop is centred on, is mixed
    with the smoothed one, `weight` of the new (an exponential moving average). A change
    larger than landmark noise (the head moved between two samples) is taken as it is, and so
    is a sample more than `max_gap` seconds after the last: between sparse samples the head
    moves more than the landmarks jitter, and smoothing would drag the crop behind it
    (bench/faces.py: smoothing 32 consecutive frames steadies the eyes, smoothing 32 spread
    over a clip unsteadies them).
    """

    weight: float = 0.5
    max_shift: float = 0.08  # of the face's size
    max_turn: float = math.radians(6)
    max_zoom: float = 0.08  # relative change of scale
    max_gap: float = 0.2  # seconds
    _state: np.ndarray | None = None  # log scale, angle, centre x, centre y
    _time: float | None = None

    def __call__(self, matrix: np.ndarray, size: int, seconds: float | None = None) -> np.ndarray:
        """The smoothed transform for this sample (at `seconds` into the video, when known)."""
        state = _similarity_state(matrix, size)
        close = seconds is None or self._time is None or seconds - self._time <= self.max_gap
        self._time = seconds
        if self._state is not None and close:
            previous = self._state
            turn = math.remainder(state[1] - previous[1], 2 * math.pi)
            face = size / math.exp(previous[0])
            jitter = (
                abs(state[0] - previous[0]) < self.max_zoom
                and abs(turn) < self.max_turn
                and math.dist(state[2:], previous[2:]) < self.max_shift * face
            )
            if jitter:
                change = np.array([state[0] - previous[0], turn, *(state[2:] - previous[2:])])
                state = previous + self.weight * change
        self._state = state
        return _similarity_matrix(state, size)


def _similarity_state(matrix: np.ndarray, size: int) -> np.ndarray:
    scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))
    angle = math.atan2(matrix[1, 0], matrix[0, 0])
    centre = cv2.invertAffineTransform(matrix) @ np.array([size / 2, size / 2, 1.0])
    return np.array([math.log(scale), angle, centre[0], centre[1]])


def _similarity_matrix(state: np.ndarray, size: int) -> np.ndarray:
    scale, angle = math.exp(state[0]), state[1]
    a, b = scale * math.cos(angle), scale * math.sin(angle)
    linear = np.array([[a, -b], [b, a]])
    shift = np.array([size / 2, size / 2]) - linear @ state[2:]
    return np.hstack([linear, shift[:, None]])


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
