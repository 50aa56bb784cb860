"""Small media made on the fly for the tests: face clips, odd containers and broken files."""

from __future__ import annotations

import json
import struct
import zlib
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from deepfake_detect.blend import MaskShape, SourceJitter, self_blend_with
from deepfake_detect.faces import create_detector, detect_faces
from deepfake_detect.synth import Motion, camera_frames, packaged_faces, write_camera_clip
from deepfake_detect.video import write_video

STILL = Motion(shift=0, zoom=0, roll_degrees=0, light=0, noise=0)
GENTLE = Motion(shift=0.02, zoom=0.04, roll_degrees=2, light=0.05, noise=1.0)
# A visible self-blend (blend.py): the face pasted back recoloured, blurred and JPEG-worn.
BLEND_SHAPE = MaskShape(width=0.9, height=1.05, lift=-0.02, wobble2=0.0, wobble3=0.0,
                        wobble4=0.0, turn=0.0, feather=0.06, opacity=1.0)  # fmt: skip
BLEND_JITTER = SourceJitter(red=20.0, green=-20.0, blue=20.0, brightness=15.0, contrast=1.2,
                            detail=-1.0, scale=1.0, shift_x=0.0, shift_y=0.0, jpeg_quality=30.0,
                            colour_transfer=1.0)  # fmt: skip
_FACES: dict[str, np.ndarray] = {}


def face_photo(name: str = "grace_hopper") -> np.ndarray:
    if not _FACES:
        _FACES.update(packaged_faces())
    return _FACES[name]


def face_clip(path: Path, seed: int = 0, size: int = 192, seconds: float = 1.0, fps: float = 10):
    """A short clip of Grace Hopper's portrait seen by a gently moving camera."""
    return write_camera_clip(face_photo(), path, (size, size), fps, seconds, seed, GENTLE)


def partly_blended_clip(
    path: Path, fps: float, seconds: float, blended: tuple[float, float], seed: int = 0
) -> Path:
    """A 160-px clip of Grace Hopper whose face is self-blended (BLEND_*) from blended[0] up
    to blended[1] seconds: a video manipulated in part."""
    detector, frames = create_detector("dlib"), []
    for index, frame in enumerate(
        camera_frames(face_photo(), (160, 160), round(fps * seconds), seed, GENTLE)
    ):
        if blended[0] <= index / fps < blended[1]:
            box = detect_faces(detector, frame)[0]
            frame = self_blend_with(frame, box, BLEND_SHAPE, BLEND_JITTER)[0]
        frames.append(frame)
    return write_video(path, frames, fps)


def coded_clip(
    path: Path, n_frames: int, x264_params: str, fps: int = 30, times: list[float] | None = None
) -> Path:
    """A 64-px H.264 clip coded with the given x264 parameters (GOP length, B-frames, open
    GOP), with frames at `times` seconds (variable frame rate) when given."""
    frames = camera_frames(cv2.resize(face_photo(), (96, 96)), (64, 64), n_frames, 0, GENTLE)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"x264-params": x264_params})
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        if times is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if times is not None:
                frame.pts, frame.time_base = round(times[index] * 1000), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def two_face_frame(width: int = 640, height: int = 360) -> np.ndarray:
    """Grace Hopper on the left (face ~120 px), the astronaut smaller on the right (~90 px)."""
    canvas = np.full((height, width, 3), 40, np.uint8)
    hopper = cv2.resize(face_photo("grace_hopper"), (307, height))
    astronaut = cv2.resize(face_photo("astronaut")[24:224, 123:323], (180, 180))
    canvas[:, :307] = hopper
    top = (height - 180) // 2
    canvas[top : top + 180, 400:580] = astronaut
    return canvas


def still_clip(path: Path, frame: np.ndarray, n_frames: int = 8, fps: float = 10, codec="libx264"):
    return write_video(path, [frame] * n_frames, fps, codec)


def noise_clip(path: Path, size: int = 128, n_frames: int = 8) -> Path:
    """A clip with no face in it: smooth random blobs."""
    rng = np.random.default_rng(0)
    frames = [
        cv2.GaussianBlur(rng.integers(0, 255, (size, size, 3), dtype=np.uint8), (0, 0), 6)
        for _ in range(n_frames)
    ]
    return write_video(path, frames, 10)


def audio_only(path: Path) -> Path:
    """An .mp4 that holds one second of AAC audio and no video stream."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=44100)
        samples = np.zeros((1, 1024), np.float32)
        for i in range(44):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def variable_rate_clip(path: Path, times: list[float]) -> Path:
    """A clip whose frames sit at the given times (seconds): variable frame rate."""
    photo = cv2.resize(face_photo(), (128, 128))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width = stream.height = 128
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for t in times:
            frame = av.VideoFrame.from_ndarray(photo, format="rgb24")
            frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def set_display_rotation(path: Path, clockwise_degrees: int) -> Path:
    """Patch an mp4's track header matrix the way phones store portrait video."""
    data = bytearray(path.read_bytes())
    at = data.index(b"tkhd") + 4
    version = data[at]
    matrix_at = at + (4 + 32 + 16 if version == 1 else 4 + 20 + 16)
    one, minus_one = 0x00010000, 0xFFFF0000
    rotations = {
        90: (0, one, minus_one, 0),
        180: (minus_one, 0, 0, minus_one),
        270: (0, minus_one, one, 0),
    }
    a, b, c, d = rotations[clockwise_degrees]
    struct.pack_into(">9I", data, matrix_at, a, b, 0, c, d, 0, 0, 0, 0x40000000)
    path.write_bytes(bytes(data))
    return path


def unknown_codec_clip(path: Path) -> Path:
    """An mp4 whose video track names a codec FFmpeg does not know (fourcc `zzzz`)."""
    data = bytearray(still_clip(path, np.zeros((32, 32, 3), np.uint8), n_frames=3).read_bytes())
    at = data.index(b"avc1", data.index(b"stsd"))
    data[at : at + 4] = b"zzzz"
    path.write_bytes(bytes(data))
    return path


def truncated_copy(source: Path, target: Path, keep: float = 0.5) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * keep)])
    return target


def crops_folder(
    root: Path,
    videos: dict[str, list[int]],
    size: int = 64,
    crops: int = 6,
    real_only_splits: tuple[str, ...] = (),
) -> Path:
    """A stage-1 output folder made directly: real crops are face photos seen by a moving
    camera, fake ones the same self-blended (the project's own pseudo-fakes).

    `videos` maps a split to the labels of its videos; each video is its own group. Splits in
    `real_only_splits` get only real videos whatever the labels say.
    """
    from deepfake_detect.blend import SelfBlendSource
    from deepfake_detect.synth import camera_frames
    from deepfake_detect.training_data import CropVideo, write_crops_folder

    names = ["grace_hopper", "astronaut"]
    made = []
    for split, labels in videos.items():
        for i, label in enumerate(labels):
            label = 0 if split in real_only_splits else label
            video_id = f"{split}_{i:03d}_{label}"
            seed = zlib.crc32(video_id.encode()) % 10_000
            photo = cv2.resize(face_photo(names[i % 2])[40:440, 60:460], (96, 96))
            frames = np.stack(list(camera_frames(photo, (size, size), crops, seed=seed)))
            if label == 1:
                blend = SelfBlendSource(seed=seed)
                frames = np.stack([blend(frame) for frame in frames])
            made.append(CropVideo(video_id, label, split, frames))
    write_crops_folder(root, made)
    settings = {"parameters": {"crop_size": size, "margin": 0.3, "face_detector": "dlib"}}
    (root / "preprocess.json").write_text(json.dumps(settings))
    return root
