"""Read videos with PyAV: probe them, choose frame indices, decode the chosen frames upright.

Frames stream out one at a time, so a long video never sits in memory. Where a container's
packets say exactly which frame each one is (MP4/MOV, Matroska/WebM), sparse samples are
reached by seeking to the keyframe before each one and decoding forward, skipping the frames
nothing refers to; dense samples are decoded straight through (decode-and-skip). Either way a
frame gets the index and timestamp that decoding every frame from the start gives it.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from functools import cached_property
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

MAX_PIXELS = 7680 * 4320  # 8K UHD: larger frames are refused before any is decoded
# Containers whose packets carry exact presentation timestamps and whose seeking by them lands
# on the keyframe asked for (FFmpeg's demuxer names). Others are decoded from the start.
SEEKABLE_FORMATS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"})
# A seek flushes the decoder and refills its threads: decoding this many frames costs about
# as much, so a keyframe closer than that is reached by decoding on instead.
SEEK_COST_FRAMES = 16


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

    def table_fields(self) -> dict[str, float | int]:
        """What metadata.csv and predict's output record of the stream (all but the codec)."""
        return {"fps": self.fps, "width": self.width, "height": self.height,
                "duration": self.duration, "n_frames": self.n_frames,
                "rotation": self.rotation}  # fmt: skip


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
    every_seconds: float | None = None,
    fps: float = 25.0,
) -> list[int]:
    """Frame indices to keep: every `sampling_rate`-th frame, or `frames_per_video` evenly
    spaced, or with `every_seconds` evenly spaced at most that many seconds apart (at `fps`)
    and at least `frames_per_video` of them.

    `max_frames` then caps the count: the first ones are kept, except with `every_seconds`,
    where the capped count is spread over the whole video.
    """
    if n_frames <= 0:
        return []
    if sampling_rate:
        indices = list(range(0, n_frames, sampling_rate))
        return indices[:max_frames] if max_frames else indices
    count = frames_per_video or n_frames
    if every_seconds:
        by_time = math.ceil((n_frames - 1) / (every_seconds * fps)) + 1
        count = min(max(frames_per_video or 1, by_time), max_frames or n_frames)
        max_frames = None
    indices = sorted({round(i) for i in np.linspace(0, n_frames - 1, min(count, n_frames))})
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


def _count_decoded(path: Path, threads: int) -> int:
    """Frames that decoding from the start gives, on `threads` threads."""
    try:
        with _open(path, threads) as container:
            return sum(1 for _ in _decoded(container))
    except av.error.FFmpegError as error:
        raise VideoError(Status.DECODE_ERROR, f"{path}: decoding failed ({error})") from None


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


def probe(path: Path, threads: int = 0, max_pixels: int = MAX_PIXELS) -> VideoInfo:
    """Read the stream's fps, size, duration, frame count and rotation (from the first frame,
    decoded on `threads` threads).

    Containers are reopened rather than rewound: seeking to 0 in MPEG-PS loses frames.

    Raises:
        VideoError: unreadable, or frames larger than `max_pixels` (refused before decoding
            one: a huge frame can fail to allocate with a misleading system error).
    """
    info = _probe_header(path, threads, max_pixels)
    return info if info.n_frames else replace(info, n_frames=_count_frames(path))


def _probe_header(path: Path, threads: int, max_pixels: int) -> VideoInfo:
    """`probe` without counting the frames of a container that does not say (n_frames 0)."""
    with _open(path, threads) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = (container.duration or 0) / av.time_base
        n_frames = stream.frames
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > max_pixels:
            raise VideoError(
                Status.DECODE_ERROR,
                f"{path}: {width}x{height} frames exceed --max-pixels ({max_pixels})",
            )
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
    return VideoInfo(fps, width, height, duration, n_frames, rotation, codec)


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


@dataclass(frozen=True)
class FrameTable:
    """A video stream's frames as demuxing alone sees them, without decoding: each packet's
    presentation timestamp and keyframe flag, in decode order.

    `clean` says that no packet was cut short (a truncated file), so each listed packet
    decodes to one frame. `seekable` says besides that the pts name those frames in a
    container that seeks by them: frame i is then the packet with the i-th smallest pts.
    """

    pts: np.ndarray
    keyframe: np.ndarray
    clean: bool
    seekable: bool

    def __len__(self) -> int:
        return len(self.pts)

    @cached_property
    def decode_position(self) -> np.ndarray:
        """For each frame index (presentation order), its packet's position in decode order."""
        return np.argsort(self.pts, kind="stable")

    @cached_property
    def _keyframes(self) -> np.ndarray:
        return np.flatnonzero(self.keyframe)

    def anchor(self, index: int) -> int:
        """The decode position of the keyframe to seek to for frame `index`: the last one
        before it in decode order, or the one before that when the frame is shown before its
        keyframe (an open GOP's leading picture, which refers to the previous GOP)."""
        position = int(self.decode_position[index])
        at = int(np.searchsorted(self._keyframes, position, side="right")) - 1
        if at > 0 and self.pts[position] < self.pts[self._keyframes[at]]:
            at -= 1
        return int(self._keyframes[max(at, 0)])

    def plan(self, wanted: Sequence[int]) -> list[tuple[int | None, list[int]]]:
        """Split sorted frame indices into runs decoded forward: each from a seek to a keyframe
        (its decode position) or, None, from where decoding already is.

        A run starts with a seek when the next wanted frame's keyframe lies further ahead than
        a seek costs; dense samples therefore make one run from the start.
        """
        if not self.seekable:
            return [(None, list(wanted))]
        runs: list[tuple[int | None, list[int]]] = [(None, [])]
        position = -1
        for index in wanted:
            anchor = self.anchor(index)
            if anchor > position + SEEK_COST_FRAMES:
                runs.append((anchor, []))
            runs[-1][1].append(index)
            position = max(position, int(self.decode_position[index]))
        return [run for run in runs if run[1]]


def frame_table(path: Path) -> FrameTable:
    """Demux the video stream (no decoding) and list its frames' packets.

    Empty, discarded (edit list) and corrupt (cut short) packets give no frame when decoded
    from the start, so they are not listed; a corrupt one makes the stream unclean.
    """
    with _open(path) as container:
        stream = container.streams.video[0]
        pts, keyframe, clean = [], [], True
        for packet in container.demux(stream):
            if not packet.size or packet.is_discard:
                continue
            if packet.is_corrupt:
                clean = False
                continue
            pts.append(packet.pts)
            keyframe.append(packet.is_keyframe)
        seekable = (
            clean
            and container.format.name in SEEKABLE_FORMATS
            and stream.frames in (0, len(pts))
            and bool(keyframe)
            and keyframe[0]
            and None not in pts
            and len(set(pts)) == len(pts)
        )
    timestamps = np.array([-1 if t is None else t for t in pts], np.int64)
    return FrameTable(timestamps, np.array(keyframe, bool), clean, seekable)


class _PlanMissed(Exception):
    """Decoding after a seek did not give the frame the table promised."""


def _decoded(container: av.container.InputContainer) -> Iterator[av.VideoFrame]:
    """Every frame in decode order; packets the decoder rejects are skipped, not fatal."""
    for packet in container.demux(container.streams.video[0]):
        try:
            decoded = packet.decode()
        except av.error.FFmpegError:
            continue
        yield from decoded


def _decoded_skipping(
    container: av.container.InputContainer, keep: set[int]
) -> Iterator[av.VideoFrame]:
    """Frames decoded on from the container's position, except those no other frame refers to
    and whose pts is not in `keep`: the decoder skips those (about half of H.264's frames)."""
    stream = container.streams.video[0]
    for packet in container.demux(stream):
        stream.codec_context.skip_frame = "DEFAULT" if packet.pts in keep else "NONREF"
        try:
            decoded = packet.decode()
        except av.error.FFmpegError:
            continue
        yield from decoded


def _frame_at(frames: Iterator[av.VideoFrame], pts: int) -> av.VideoFrame:
    """The next frame with this pts, passing earlier ones (leading pictures after a seek)."""
    for frame in frames:
        if frame.pts is not None and frame.pts < pts:
            continue
        if frame.pts == pts:
            return frame
        break
    raise _PlanMissed(pts)


def _planned(
    container: av.container.InputContainer, table: FrameTable, wanted: list[int]
) -> Iterator[tuple[int, av.VideoFrame]]:
    """The wanted frames, decoded run by run as `FrameTable.plan` says."""
    stream = container.streams.video[0]
    keep = {int(table.pts[table.decode_position[i]]) for i in wanted}
    frames: Iterator[av.VideoFrame] | None = None
    for anchor, indices in table.plan(wanted):
        if anchor is not None:
            container.seek(int(table.pts[anchor]), stream=stream, backward=True)
        if anchor is not None or frames is None:
            frames = _decoded_skipping(container, keep)
        for index in indices:
            yield index, _frame_at(frames, int(table.pts[table.decode_position[index]]))


def _in_order(
    container: av.container.InputContainer, wanted: list[int]
) -> Iterator[tuple[int, av.VideoFrame]]:
    """The wanted frames, decoding every frame from the start and counting them."""
    wanted_set, last = set(wanted), wanted[-1]
    for index, frame in enumerate(_decoded(container)):
        if index in wanted_set:
            yield index, frame
        if index >= last:
            return


def _to_frame(index: int, frame: av.VideoFrame, fps: float) -> Frame:
    timestamp = float(frame.time) if frame.time is not None else index / fps
    return Frame(
        index, timestamp, _upright(frame.to_ndarray(format="rgb24"), _clockwise_rotation(frame))
    )


def _frames(
    path: Path, table: FrameTable, wanted: list[int], fps: float, threads: int
) -> Iterator[Frame]:
    """Decode the wanted frames one at a time: by the table's plan when the stream is
    seekable, falling back to decoding from the start should a seek not give a frame."""
    done = -1
    try:
        if table.seekable:
            with _open(path, threads) as container:
                try:
                    for index, frame in _planned(container, table, wanted):
                        yield _to_frame(index, frame, fps)
                        done = index
                except _PlanMissed:
                    pass
        rest = [index for index in wanted if index > done]
        if rest:
            with _open(path, threads) as container:
                for index, frame in _in_order(container, rest):
                    yield _to_frame(index, frame, fps)
                    done = index
    except av.error.FFmpegError as error:
        raise VideoError(Status.DECODE_ERROR, f"{path}: decoding failed ({error})") from None
    if done < 0:
        raise VideoError(Status.NO_FRAMES, f"{path}: no frame could be decoded")


def sample_frames(
    path: Path,
    frames_per_video: int | None = None,
    sampling_rate: int | None = None,
    max_frames: int | None = None,
    every_seconds: float | None = None,
    threads: int = 0,
    max_pixels: int = MAX_PIXELS,
) -> tuple[VideoInfo, Iterator[Frame]]:
    """Probe a video now, and return the sampled frames as they decode, on `threads` threads
    (0: one per core). Indices are chosen (`sample_indices`) over the frames that the stream
    really holds, so a truncated file whose header promises more is still sampled across.

    Raises:
        VideoError: when probing; iterating can raise it too (decode_error, no_frames).
    """
    info = _probe_header(path, threads, max_pixels)
    try:
        table = frame_table(path)
    except av.error.FFmpegError as error:
        raise VideoError(Status.DECODE_ERROR, f"{path}: demuxing failed ({error})") from None
    info = replace(info, n_frames=info.n_frames or len(table))
    n_frames = len(table) if table.clean else _count_decoded(path, threads)
    wanted = sample_indices(
        n_frames, frames_per_video, sampling_rate, max_frames, every_seconds, info.fps
    )
    if not wanted:
        raise VideoError(Status.NO_FRAMES, f"{path}: video stream has no frames")
    return info, _frames(path, table, wanted, info.fps, threads)


def read_frames(
    path: Path,
    frames_per_video: int | None = None,
    sampling_rate: int | None = None,
    max_frames: int | None = None,
    threads: int = 0,
) -> tuple[VideoInfo, list[Frame]]:
    """`sample_frames`, with every sampled frame decoded into a list (short clips only)."""
    info, frames = sample_frames(path, frames_per_video, sampling_rate, max_frames, threads=threads)
    return info, list(frames)


def iter_frames(
    path: Path, indices: Sequence[int] | None = None, threads: int = 0
) -> Iterator[Frame]:
    """The frames at sorted `indices` (default: every frame), upright, numbered as
    `sample_frames` numbers them."""
    info = _probe_header(path, threads, MAX_PIXELS)
    table = frame_table(path)
    wanted = (
        [i for i in indices if i < len(table)] if indices is not None else list(range(len(table)))
    )
    if wanted:
        yield from _frames(path, table, wanted, info.fps, threads)


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
