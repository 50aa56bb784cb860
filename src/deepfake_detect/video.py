"""Read videos with PyAV: probe them, choose frame indices, decode the chosen frames upright.

Frames are decoded in order and only the chosen ones are converted to RGB (decode-and-skip):
seeking per sampled frame is 5-10x slower on long-GOP H.264.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from deepfake_detect.errors import DeepfakeDetectError
from deepfake_detect.status import Status

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".m4v", ".flv", ".wmv", ".ts"}
)


# x264's macroblock-tree gives run-to-run different output on some AVX-512 CPUs; without it,
# the same frames always encode to the same bytes (synthetic data must be reproducible).
DETERMINISTIC_ENCODER_OPTIONS = {"libx264": {"x264-params": "no-mbtree=1"}}


class VideoError(DeepfakeDetectError):
    """A video that cannot be read; `status` is the short reason recorded in metadata.csv."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class VideoInfo:
    """What a video's container says about its video stream (sizes are after rotation)."""

    fps: float
    width: int
    height: int
    duration: float
    n_frames: int
    rotation: int
    codec: str


@dataclass(frozen=True)
class Frame:
    """One decoded frame: its index in decode order, its time in seconds, upright RGB pixels."""

    index: int
    timestamp: float
    image: np.ndarray


def is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def sample_indices(
    n_frames: int,
    frames_per_video: int | None = None,
    sampling_rate: int | None = None,
    max_frames: int | None = None,
) -> list[int]:
    """Frame indices to keep: every `sampling_rate`-th frame, or `frames_per_video` evenly spaced.

    `max_frames` then caps the count (the first ones are kept).
    """
    if n_frames <= 0:
        return []
    if sampling_rate:
        indices = list(range(0, n_frames, sampling_rate))
    else:
        count = min(frames_per_video or n_frames, n_frames)
        indices = sorted({round(i) for i in np.linspace(0, n_frames - 1, count)})
    return indices[:max_frames] if max_frames else indices


def _open(path: Path, threads: int = 0) -> av.container.InputContainer:
    """Open a container, turning every way it can fail into a VideoError with a status.

    The video stream decodes on `threads` threads (0: FFmpeg's choice, one per core).
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise VideoError(Status.MISSING, f"{path}: file not found") from None
    except OSError as error:
        raise VideoError(
            Status.READ_ERROR, f"{path}: cannot stat file ({error.strerror})"
        ) from None
    if not path.is_file():
        raise VideoError(Status.READ_ERROR, f"{path}: not a regular file")
    if size == 0:
        raise VideoError(Status.EMPTY_FILE, f"{path}: file is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise VideoError(Status.READ_ERROR, f"{path}: permission denied")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except PermissionError:
        raise VideoError(Status.READ_ERROR, f"{path}: permission denied") from None
    except FileNotFoundError:
        raise VideoError(Status.MISSING, f"{path}: file disappeared") from None
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise VideoError(Status.DECODE_ERROR, f"{path}: not a readable video ({error})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(Status.NO_VIDEO_STREAM, f"{path}: has no video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None:  # a codec FFmpeg has no decoder for, or a garbled tag
        container.close()
        raise VideoError(Status.DECODE_ERROR, f"{path}: video stream in an unknown codec")
    stream.thread_type = "AUTO"
    stream.thread_count = threads
    return container


def _count_frames(path: Path) -> int:
    """Count video packets by demuxing only (no decoding), for containers with no frame count."""
    with _open(path) as container:
        return sum(1 for packet in container.demux(container.streams.video[0]) if packet.size)


def _upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Rotate pixels clockwise by `rotation` degrees, as a player does with the display matrix."""
    quarter_turns = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(image, k=-quarter_turns)) if quarter_turns else image


def _clockwise_rotation(frame: av.VideoFrame) -> int:
    """The display matrix stores a counter-clockwise angle; players rotate by its negative."""
    return round(-(frame.rotation or 0) / 90.0) * 90 % 360


def probe(path: Path, threads: int = 0) -> VideoInfo:
    """Read the stream's fps, size, duration, frame count and rotation (from the first frame,
    decoded on `threads` threads).

    Containers are reopened rather than rewound: seeking to 0 in MPEG-PS loses frames.
    """
    with _open(path, threads) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = (container.duration or 0) / av.time_base
        n_frames = stream.frames
        width, height = stream.codec_context.width, stream.codec_context.height
        codec = stream.codec_context.name
        try:
            first = next(container.decode(stream), None)
        except av.error.FFmpegError:
            first = None
    rotation = _clockwise_rotation(first) if first is not None else 0
    if rotation in (90, 270):
        width, height = height, width
    if width <= 0 or height <= 0:
        raise VideoError(Status.DECODE_ERROR, f"{path}: video stream has no frame size")
    return VideoInfo(fps, width, height, duration, n_frames or _count_frames(path), rotation, codec)


def check_video(path: Path, min_frames: int = 2) -> VideoInfo:
    """Probe a file and decode its first `min_frames` frames: a video, not a still image
    renamed .mp4 (FFmpeg opens a PNG as a one-frame stream) nor a stream of broken frames.

    Raises:
        VideoError: the file is not a video with `min_frames` decodable frames.
    """
    info = probe(path)
    try:
        with _open(path) as container:
            decoded = sum(1 for _ in itertools.islice(_decoded(container), min_frames))
    except av.error.FFmpegError as error:
        raise VideoError(Status.DECODE_ERROR, f"{path}: decoding failed ({error})") from None
    if decoded == 0:
        raise VideoError(Status.NO_FRAMES, f"{path}: no frame could be decoded")
    if decoded < min_frames:
        message = f"{path}: only {decoded} decodable frame(s), a video needs {min_frames}"
        raise VideoError(Status.DECODE_ERROR, f"{message} (a still image?)")
    return info


def _decoded(container: av.container.InputContainer) -> Iterator[av.VideoFrame]:
    """Every frame in decode order; packets the decoder rejects are skipped, not fatal."""
    for packet in container.demux(container.streams.video[0]):
        try:
            decoded = packet.decode()
        except av.error.FFmpegError:
            continue
        yield from decoded


def _to_frame(index: int, frame: av.VideoFrame, fps: float) -> Frame:
    timestamp = float(frame.time) if frame.time is not None else index / fps
    return Frame(
        index, timestamp, _upright(frame.to_ndarray(format="rgb24"), _clockwise_rotation(frame))
    )


def _decode_frames(
    container: av.container.InputContainer, wanted: list[int], fps: float
) -> tuple[list[Frame], int]:
    """Decode in order, convert only the wanted indices.

    Returns the frames and how many frames were decoded in all.
    """
    wanted_set, last = set(wanted), wanted[-1]
    frames: list[Frame] = []
    count = 0
    for index, frame in enumerate(_decoded(container)):
        count = index + 1
        if index in wanted_set:
            frames.append(_to_frame(index, frame, fps))
        if index >= last:
            break
    return frames, count


def iter_frames(path: Path) -> Iterator[Frame]:
    """Every frame of a video, upright, numbered as `read_frames` numbers them."""
    fps = probe(path).fps
    with _open(path) as container:
        for index, frame in enumerate(_decoded(container)):
            yield _to_frame(index, frame, fps)


def read_frames(
    path: Path,
    frames_per_video: int | None = None,
    sampling_rate: int | None = None,
    max_frames: int | None = None,
    threads: int = 0,
) -> tuple[VideoInfo, list[Frame]]:
    """Probe a video and decode the sampled frames on `threads` threads (0: one per core).

    When the container overstates its frame count (a truncated file), the indices are
    chosen again over the frames that really decode, so sampling still spans the video.
    """
    info = probe(path, threads)
    wanted = sample_indices(info.n_frames, frames_per_video, sampling_rate, max_frames)
    if not wanted:
        raise VideoError(Status.NO_FRAMES, f"{path}: video stream has no frames")
    try:
        with _open(path, threads) as container:
            frames, decoded = _decode_frames(container, wanted, info.fps)
        if 0 < decoded < info.n_frames and len(frames) < len(wanted):
            wanted = sample_indices(decoded, frames_per_video, sampling_rate, max_frames)
            with _open(path, threads) as container:
                frames, decoded = _decode_frames(container, wanted, info.fps)
    except av.error.FFmpegError as error:
        raise VideoError(Status.DECODE_ERROR, f"{path}: decoding failed ({error})") from None
    if not frames:
        raise VideoError(Status.NO_FRAMES, f"{path}: no frame could be decoded")
    return info, frames


def write_video(
    path: Path,
    frames: Iterable[np.ndarray],
    fps: float = 25.0,
    codec: str = "libx264",
    container_options: dict[str, str] | None = None,
) -> Path:
    """Encode RGB frames (all the same size) into a video file with PyAV.

    `container_options` go to the muxer, e.g. {"movflags": "faststart"} puts an mp4's index
    first, as web video does.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", options=container_options or {}) as container:
        stream = None
        for image in frames:
            if stream is None:
                options = DETERMINISTIC_ENCODER_OPTIONS.get(codec, {})
                rate = Fraction(fps).limit_denominator(1001)
                stream = container.add_stream(codec, rate=rate, options=options)
                stream.height, stream.width = image.shape[:2]
                stream.pix_fmt = "yuv420p"
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            container.mux(stream.encode(frame))
        if stream is not None:
            container.mux(stream.encode())
    return path
