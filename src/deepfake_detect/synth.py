"""Synthetic deepfake datasets made from real faces, on any machine.

Face sources (the shipped corpus of real people, packaged photos, a user's photos or videos)
are filmed by a virtual moving camera; a video source gives every frame (real head motion,
blinks, speech, compression), a photo one still. Fakes are made with the blends of `blend.py`
(self-blends and face swaps) whose parameters drift smoothly over a clip. `generate_dataset`
writes a labelled real/fake clip dataset that stage 1 reads.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from deepfake_detect.blend import (
    Drift,
    MaskShape,
    SourceJitter,
    face_swap_with,
    self_blend_with,
)
from deepfake_detect.corpus import corpus_identity, corpus_paths
from deepfake_detect.dataset_layouts import MANIFEST_NAME
from deepfake_detect.errors import DeepfakeDetectError
from deepfake_detect.faces import Box, FaceDetector, create_detector, detect_faces
from deepfake_detect.files import atomic_path
from deepfake_detect.video import VideoError, is_video_file, read_frames, write_video

MIN_SIDE = 64
# The cameraman in skimage's `camera` photo is in profile, which dlib's frontal detector
# misses (YuNet finds him); this box was measured by eye (brow to chin, ear to nose tip).
KNOWN_FACE_BOXES = {"camera": Box(190, 122, 262, 196)}
# Clips are framed on the face, as a talking-head video is: this many face sizes across.
FRAME_FACES_ACROSS = 3.0
# A user's video may open on a black or faceless frame: look at this many spaced frames.
VIDEO_FRAMES_TRIED = 5
# A video source keeps at most this many frames (10 s at 25 fps): enough motion, bounded memory.
MAX_SOURCE_FRAMES = 250
# Faces are detected on every this many frames of a video source and interpolated between.
DETECT_EVERY = 5
SELF_BLEND, FACE_SWAP = "self_blend", "face_swap"
FILE_SUFFIX = {SELF_BLEND: "blend", FACE_SWAP: "swap"}
MANIFEST_PARAMETERS = (
    "opacity",
    "feather",
    "red",
    "green",
    "blue",
    "brightness",
    "contrast",
    "detail",
    "scale",
    "jpeg_quality",
    "colour_transfer",
)


class SynthError(DeepfakeDetectError, ValueError):
    """A face source or request that cannot be used; one line naming the file and the problem."""


# --- face sources ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaceSource:
    """One identity's face picture (RGB uint8) and where its face is.

    A video source also holds its frames and the face box in each (`image`, `box` are the
    first); a clip of it plays them in time, forward then back when the clip is longer.
    """

    identity: str
    image: np.ndarray
    box: Box
    frames: tuple[np.ndarray, ...] = ()
    boxes: tuple[Box, ...] = ()
    fps: float = 25.0

    @property
    def duration(self) -> float:
        """Seconds of footage (0 for a photo)."""
        return len(self.frames) / self.fps

    def at(self, seconds: float) -> tuple[np.ndarray, Box]:
        """The picture and face box `seconds` into the footage (a photo: its only picture)."""
        if len(self.frames) < 2:
            return self.image, self.box
        period = 2 * (len(self.frames) - 1)
        index = round(seconds * self.fps) % period
        index = index if index < len(self.frames) else period - index
        return self.frames[index], self.boxes[index]

    def renamed(self, identity: str) -> FaceSource:
        return replace(self, identity=identity)


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


def packaged_face_sources(detector: FaceDetector | None = None) -> list[FaceSource]:
    """The packaged photos with their face boxes and landmarks (detected by YuNet unless
    another detector is given; a box measured by eye where it finds none)."""
    detector = detector or create_detector("yunet")
    sources = []
    for identity, image in packaged_faces().items():
        boxes = detect_faces(detector, image)
        sources.append(
            FaceSource(identity, image, boxes[0] if boxes else KNOWN_FACE_BOXES[identity])
        )
    return sources


@cache
def _corpus_sources() -> tuple[FaceSource, ...]:
    detector = create_detector("yunet")
    return tuple(
        read_face_source(path, detector).renamed(corpus_identity(path)) for path in corpus_paths()
    )


def corpus_face_sources() -> list[FaceSource]:
    """The shipped real people (corpus.py): each GRID speaker's every frame, and the portraits
    (read once per process)."""
    return list(_corpus_sources())


def default_face_sources(detector: FaceDetector | None = None) -> list[FaceSource]:
    """The 15 identities synth uses by default: the shipped corpus and the packaged photos."""
    return corpus_face_sources() + packaged_face_sources(detector)


def load_face_source(path: Path) -> np.ndarray:
    """A face picture from a photo or a video (RGB uint8); SynthError when it has no usable face."""
    return read_face_source(path).image


def read_face_source(path: Path, detector: FaceDetector | None = None) -> FaceSource:
    """A photo or video as a FaceSource: its largest face found by YuNet (or the detector
    given), with its landmarks.

    A video gives its frames (up to MAX_SOURCE_FRAMES from the start) with the largest face
    tracked through them.
    """
    detector = detector or create_detector("yunet")
    if path.is_file() and is_video_file(path):
        return read_video_source(path, detector)
    for image in _candidate_images(path):
        if min(image.shape[:2]) < MIN_SIDE:
            height, width = image.shape[:2]
            raise SynthError(f"{path}: too small ({width}x{height} px; need {MIN_SIDE} px a side)")
        boxes = detect_faces(detector, image)
        if boxes:
            return FaceSource(_identity_name(path), image, boxes[0])
    raise SynthError(f"{path}: no face found by the {detector.name} detector")


def read_video_source(path: Path, detector: FaceDetector | None = None) -> FaceSource:
    """Every frame of a video (up to MAX_SOURCE_FRAMES) with its largest face's box.

    Faces are detected on every DETECT_EVERY-th frame and the box is interpolated between
    (a talking head moves little in a fifth of a second); SynthError if no face is found.
    """
    detector = detector or create_detector("yunet")
    try:
        info, decoded = read_frames(path, sampling_rate=1, max_frames=MAX_SOURCE_FRAMES)
    except VideoError as error:
        raise SynthError(str(error)) from None
    frames = tuple(frame.image for frame in decoded)
    if not frames:
        raise SynthError(f"{path}: no decodable frame")
    if min(frames[0].shape[:2]) < MIN_SIDE:
        height, width = frames[0].shape[:2]
        raise SynthError(f"{path}: too small ({width}x{height} px; need {MIN_SIDE} px a side)")
    probes = sorted({*range(0, len(frames), DETECT_EVERY), len(frames) - 1})
    found = {i: boxes[0] for i in probes if (boxes := detect_faces(detector, frames[i]))}
    if not found:
        raise SynthError(f"{path}: no face found")
    boxes = _interpolated_track(found, len(frames))
    fps = info.fps if info.fps and info.fps > 0 else 25.0
    return FaceSource(_identity_name(path), frames[0], boxes[0], frames, boxes, fps)


def _interpolated_track(found: dict[int, Box], length: int) -> tuple[Box, ...]:
    """A box for each of `length` frames from the boxes found on some of them, corners (and
    landmarks, when every found box has them) interpolated linearly in between."""
    known = np.array(sorted(found))
    with_points = all(found[i].landmarks is not None for i in known)
    rows = [
        [found[i].x0, found[i].y0, found[i].x1, found[i].y1]
        + (list(found[i].points.ravel()) if with_points else [])
        for i in known
    ]
    values = np.array(rows, dtype=np.float64)
    every = np.arange(length)
    track = np.stack([np.interp(every, known, values[:, k]) for k in range(values.shape[1])], 1)
    return tuple(_box_of(row, with_points) for row in track)


def _box_of(row: np.ndarray, with_points: bool) -> Box:
    """A Box from 4 corners, then 10 landmark coordinates when `with_points`."""
    points = tuple(map(tuple, row[4:].reshape(5, 2).tolist())) if with_points else None
    return Box(*map(float, row[:4]), landmarks=points)


def _candidate_images(path: Path) -> list[np.ndarray]:
    """The picture of a photo, or a few frames of a video, as RGB uint8."""
    if not path.is_file():
        problem = "is a folder, not a photo or video" if path.is_dir() else "file not found"
        raise SynthError(f"{path}: {problem}")
    if is_video_file(path):
        try:
            _, frames = read_frames(path, frames_per_video=VIDEO_FRAMES_TRIED)
        except VideoError as error:
            raise SynthError(str(error)) from None
        return [frame.image for frame in frames]
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as error:
        raise SynthError(f"{path}: cannot read ({error.strerror})") from None
    # imdecode, unlike imread, reads any path on every platform; grey and RGBA become RGB.
    image = cv2.imdecode(data, cv2.IMREAD_COLOR_RGB) if data.size else None
    if image is None:
        raise SynthError(f"{path}: not a readable image or video")
    return [image]


def _identity_name(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", path.stem).strip("_") or "face"


def _framed_on_face(source: FaceSource) -> FaceSource:
    """Crop the picture to a square FRAME_FACES_ACROSS face sizes wide, face centred when it can be.

    Clips of a whole group photo would show a tiny face; framing gives every identity a face
    of about the same size in the clip. A video keeps one window for all its frames (around
    the median face), so the head still moves inside it.
    """
    height, width = source.image.shape[:2]
    corners = np.median([[b.x0, b.y0, b.x1, b.y1] for b in source.boxes or [source.box]], axis=0)
    middle = Box(*map(float, corners))
    face_side = max(middle.x1 - middle.x0, middle.y1 - middle.y0)
    side = min(round(FRAME_FACES_ACROSS * face_side), width, height)
    cx, cy = (middle.x0 + middle.x1) / 2, (middle.y0 + middle.y1) / 2
    x0 = int(np.clip(round(cx - side / 2), 0, width - side))
    y0 = int(np.clip(round(cy - side / 2), 0, height - side))

    def crop(image: np.ndarray, box: Box) -> tuple[np.ndarray, Box]:
        return image[y0 : y0 + side, x0 : x0 + side], box.moved(1.0, -x0, -y0)

    image, box = crop(source.image, source.box)
    framed = [crop(f, b) for f, b in zip(source.frames, source.boxes, strict=True)]
    frames = tuple(f for f, _ in framed)
    boxes = tuple(b for _, b in framed)
    return FaceSource(source.identity, image, box, frames, boxes, source.fps)


# --- clips -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Motion:
    """Smooth camera motion over a clip: drift, zoom, roll, lighting drift and sensor noise."""

    shift: float = 0.04
    zoom: float = 0.08
    roll_degrees: float = 3.0
    light: float = 0.1
    noise: float = 2.0


def _camera_shots(
    source: FaceSource,
    size: tuple[int, int],
    n_frames: int,
    seed: int,
    motion: Motion,
    fps: float = 25.0,
    start: float = 0.0,
) -> Iterator[tuple[np.ndarray, Box]]:
    """Each frame of the moving camera with the face's box in it; a video source plays from
    `start` seconds in, frame `i` showing its picture at `start + i / fps`."""
    rng = np.random.default_rng(seed)
    width, height = size
    ph, pw = source.image.shape[:2]
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
        picture, box = source.at(start + i / fps)
        frame = cv2.warpAffine(picture, matrix, (width, height), borderMode=cv2.BORDER_REFLECT)
        gain = 1 + motion.light * wave[4]
        noise = rng.normal(0, motion.noise, frame.shape) if motion.noise else 0
        yield np.clip(frame * gain + noise, 0, 255).astype(np.uint8), _box_through(box, matrix)


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
    still = FaceSource("photo", photo, Box(0, 0, 1, 1))
    for frame, _ in _camera_shots(still, size, n_frames, seed, motion):
        yield frame


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


def _box_through(box: Box, matrix: np.ndarray) -> Box:
    """The box a face box becomes under a similarity transform (centre moved, size scaled),
    its landmarks moved with it."""
    centre = matrix @ np.array([(box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2, 1.0])
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    half_w, half_h = scale * (box.x1 - box.x0) / 2, scale * (box.y1 - box.y0) / 2
    points = None
    if box.landmarks is not None:
        points = tuple(map(tuple, cv2.transform(box.points[None], matrix)[0].tolist()))
    return Box(
        centre[0] - half_w,
        centre[1] - half_h,
        centre[0] + half_w,
        centre[1] + half_h,
        box.score,
        points,
    )


@dataclass(frozen=True)
class FakeRecipe:
    """How one fake clip is made: the method, the pasted identity and the drifting parameters."""

    method: str
    source: FaceSource | None
    mask: Drift[MaskShape]
    jitter: Drift[SourceJitter]

    @classmethod
    def random(cls, method: str, source: FaceSource | None, rng: np.random.Generator) -> FakeRecipe:
        return cls(method, source, Drift.random(MaskShape, rng), Drift.random(SourceJitter, rng))

    def apply(self, frame: np.ndarray, box: Box, seconds: float) -> np.ndarray:
        """The manipulated frame at `seconds` into the clip (the face is at `box`); a video
        source's face moves and speaks as its footage does."""
        shape, jitter = self.mask.at(seconds), self.jitter.at(seconds)
        if self.source is None:
            return self_blend_with(frame, box, shape, jitter)[0]
        picture, source_box = self.source.at(seconds)
        return face_swap_with(frame, box, picture, source_box, shape, jitter)[0]

    def parameters(self) -> dict[str, float | str]:
        """The clip's mean value of each key parameter, for the manifest."""
        means = vars(self.mask.mean()) | vars(self.jitter.mean())
        row: dict[str, float | str] = {name: round(means[name], 4) for name in MANIFEST_PARAMETERS}
        if self.method == SELF_BLEND:
            row["colour_transfer"] = ""
        return row


def _fake_frames(
    target: FaceSource,
    recipe: FakeRecipe,
    size: int,
    n_frames: int,
    fps: float,
    seed: int,
    motion: Motion,
    start: float = 0.0,
) -> Iterator[np.ndarray]:
    """A camera clip of the target with every frame manipulated where the face is."""
    shots = _camera_shots(target, (size, size), n_frames, seed, motion, fps, start)
    for index, (frame, box) in enumerate(shots):
        yield recipe.apply(frame, box, index / fps)


# --- datasets ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipPlan:
    """One clip of a dataset: who it shows, whether and how it is faked, and its seed."""

    index: int
    target: FaceSource
    seed: int
    method: str = ""
    source: FaceSource | None = None

    @property
    def relative_path(self) -> str:
        if not self.method:
            return f"real/{self.index:04d}_{self.target.identity}.mp4"
        return f"fake/{self.index:04d}_{self.target.identity}_{FILE_SUFFIX[self.method]}.mp4"


def _plan(
    sources: list[FaceSource],
    videos: int,
    seed: int,
    fake_fraction: float,
    splits: Mapping[str, str] | None = None,
) -> list[ClipPlan]:
    """Which clips to make: identities cycled within each label so every one has reals and fakes.

    Fakes cycle through the identities too, one each in turn, alternating self-blend and face
    swap (and each identity's method from one round to the next), so even a small dataset
    has both methods and every identity both labels; a swap pastes a randomly chosen other
    identity (of the same split when `splits` maps identities to splits, so no face crosses a
    split).
    """
    rng = np.random.default_rng(seed)
    clip_seeds = rng.integers(0, 2**31 - 1, size=videos)
    fakes_wanted = round(videos * fake_fraction)
    plans, n_real, n_fake = [], 0, 0
    for index in range(videos):
        # spread the fakes evenly: clip `index` is a fake when the running count steps up
        if (index + 1) * fakes_wanted // videos == index * fakes_wanted // videos:
            target = sources[n_real % len(sources)]
            plans.append(ClipPlan(index, target, int(clip_seeds[index])))
            n_real += 1
            continue
        turn, rounds = n_fake % len(sources), n_fake // len(sources)
        target = sources[turn]
        method = (SELF_BLEND, FACE_SWAP)[(turn + rounds) % 2]
        source = None
        if method == FACE_SWAP:
            others = [s for s in sources if s.identity != target.identity]
            if splits is not None:
                same = [s for s in others if splits.get(s.identity) == splits.get(target.identity)]
                others = same or others
            source = others[int(rng.integers(len(others)))]
        plans.append(ClipPlan(index, target, int(clip_seeds[index]), method, source))
        n_fake += 1
    return plans


def _write_clip(
    plan: ClipPlan,
    output_dir: Path,
    size: int,
    fps: float,
    seconds: float,
    split: str | None = None,
) -> dict[str, object]:
    """Write one clip and return its manifest row.

    The clip is written under a hidden name and then renamed, so a crash leaves no half clip
    where stage 1 would look.
    """
    n_frames = max(1, round(fps * seconds))
    motion = Motion()
    row: dict[str, object] = {
        "path": plan.relative_path,
        "label": int(bool(plan.method)),
        "group": plan.target.identity,
        "method": plan.method,
        "source_identity": "",
        "seed": plan.seed,
    }
    if split is not None:
        row["split"] = split
    # a video identity's clip starts anywhere in its footage (a stream apart from the others)
    start = float(np.random.default_rng([plan.seed, 2]).uniform(0, plan.target.duration))
    if plan.method:
        recipe_rng = np.random.default_rng([plan.seed, 1])  # a stream apart from the camera's
        recipe = FakeRecipe.random(plan.method, plan.source, recipe_rng)
        frames = _fake_frames(plan.target, recipe, size, n_frames, fps, plan.seed, motion, start)
        row["source_identity"] = (plan.source or plan.target).identity
        row |= recipe.parameters()
    else:
        shots = _camera_shots(plan.target, (size, size), n_frames, plan.seed, motion, fps, start)
        frames = (frame for frame, _ in shots)
        row |= dict.fromkeys(MANIFEST_PARAMETERS, "")
    path = output_dir / plan.relative_path
    with atomic_path(path) as partial:
        write_video(partial, frames, fps)
    return row


def _unique_identities(sources: list[FaceSource]) -> list[FaceSource]:
    """Rename repeated identities (two `me.jpg` in different folders) to `me_2`, `me_3`..."""
    seen: dict[str, int] = {}
    unique = []
    for source in sources:
        seen[source.identity] = seen.get(source.identity, 0) + 1
        if seen[source.identity] > 1:
            source = source.renamed(f"{source.identity}_{seen[source.identity]}")
        unique.append(source)
    return unique


def split_identities(
    identities: Sequence[str], n_val: int, n_test: int, seed: int = 0
) -> dict[str, str]:
    """Each identity to train, val or test: `n_val` and `n_test` of them drawn by the seed,
    the rest train; no person is in two splits."""
    names = sorted(set(identities))
    if n_val < 0 or n_test < 0 or n_val + n_test >= len(names):
        raise SynthError(
            f"cannot hold out {n_val} val and {n_test} test identities of {len(names)}: "
            "at least one must be left to train on"
        )
    order = np.random.default_rng([seed, 3]).permutation(len(names))
    splits = dict.fromkeys(names, "train")
    for rank, index in enumerate(order[: n_val + n_test]):
        splits[names[index]] = "val" if rank < n_val else "test"
    return splits


def _check_request(
    output_dir: Path, videos: int, size: int, fps: float, seconds: float, fake_fraction: float
) -> None:
    if videos < 1:
        raise SynthError(f"videos must be at least 1, got {videos}")
    if size < MIN_SIDE or size % 2:
        raise SynthError(f"size must be an even number of pixels >= {MIN_SIDE}, got {size}")
    if fps <= 0 or seconds <= 0:
        raise SynthError(f"fps and seconds must be positive, got {fps} and {seconds}")
    if not 0 <= fake_fraction <= 1:
        raise SynthError(f"fake_fraction must be between 0 and 1, got {fake_fraction}")
    for folder in (output_dir / "real", output_dir / "fake"):
        if folder.is_dir() and any(is_video_file(p) for p in folder.iterdir()):
            raise SynthError(f"{folder}: already holds videos; choose an empty output folder")


def generate_dataset(
    output_dir: Path,
    videos: int = 40,
    seed: int = 0,
    faces: Sequence[Path] = (),
    size: int = 256,
    fps: float = 25.0,
    seconds: float = 2.0,
    fake_fraction: float = 0.5,
    on_clip: Callable[[Path], None] | None = None,
    *,
    corpus: bool = True,
    identity_splits: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Write a labelled clip dataset in the real/ fake/ layout stage 1 reads, with manifest.csv.

    Args:
        output_dir: gets real/*.mp4, fake/*.mp4 and manifest.csv (one row per clip: path,
            label, group = the identity shown, method, source_identity, seed and the fake's
            mean parameters). Refused if real/ or fake/ already hold videos.
        videos: how many clips.
        seed: the same seed gives the same frames and the same manifest.
        faces: the user's photos or videos, added to the default faces as more identities.
        size: clip width and height in pixels.
        fps, seconds: frame rate and length of each clip.
        fake_fraction: the share of clips that are fakes (half self-blends, half swaps).
        on_clip: called with each clip's path once it is written (for progress).
        corpus: film the shipped real people (corpus.py: ten GRID speakers, two portraits)
            besides the packaged photos; without it, the photos (and `faces`) only.
        identity_splits: identity -> train/val/test, written to the manifest's `split`
            column (stage 1 keeps it); swaps then paste faces of the same split only.
    """
    _check_request(output_dir, videos, size, fps, seconds, fake_fraction)
    detector = create_detector("yunet")
    defaults = default_face_sources(detector) if corpus else packaged_face_sources(detector)
    sources = defaults + [read_face_source(p, detector) for p in faces]
    framed = [_framed_on_face(s) for s in _unique_identities(sources)]
    named = set(identity_splits or {s.identity for s in framed})
    if missing := sorted({s.identity for s in framed} - named):
        raise SynthError(f"identity_splits lacks a split for {', '.join(missing)}")
    (output_dir / "real").mkdir(parents=True, exist_ok=True)
    (output_dir / "fake").mkdir(parents=True, exist_ok=True)
    rows = []
    for plan in _plan(framed, videos, seed, fake_fraction, identity_splits):
        split = None if identity_splits is None else identity_splits[plan.target.identity]
        rows.append(_write_clip(plan, output_dir, size, fps, seconds, split))
        if on_clip is not None:
            on_clip(output_dir / plan.relative_path)
    manifest = pd.DataFrame(rows)
    with atomic_path(output_dir / MANIFEST_NAME) as partial:
        manifest.to_csv(partial, index=False)
    return manifest
