from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from media import (
    audio_only,
    coded_clip,
    face_clip,
    face_photo,
    set_display_rotation,
    still_clip,
    truncated_copy,
    unknown_codec_clip,
    variable_rate_clip,
)

from deepfake_detect import video
from deepfake_detect.synth import camera_frames
from deepfake_detect.video import (
    FrameTable,
    VideoError,
    check_video,
    frame_table,
    iter_frames,
    probe,
    read_frames,
    sample_frames,
    sample_indices,
    write_video,
)


def test_sample_indices_evenly_spaced_cover_first_and_last():
    assert sample_indices(100, frames_per_video=5) == [0, 25, 50, 74, 99]
    assert sample_indices(3, frames_per_video=32) == [0, 1, 2]
    assert sample_indices(0, frames_per_video=32) == []


def test_sample_indices_every_nth_and_cap():
    assert sample_indices(10, sampling_rate=3) == [0, 3, 6, 9]
    assert sample_indices(100, sampling_rate=10, max_frames=3) == [0, 10, 20]
    assert sample_indices(100, frames_per_video=10, max_frames=2) == [0, 11]


def test_sample_indices_by_time_cover_long_videos_up_to_a_cap_spread_over_them():
    # 100 s at 10 fps: frames a second apart, at least 32 in a short clip, a cap spreads them
    every_second = sample_indices(1000, 32, every_seconds=1.0, fps=10)
    assert len(every_second) == 101 and max(np.diff(every_second)) == 10
    assert sample_indices(50, 32, every_seconds=1.0, fps=10) == sample_indices(50, 32)
    capped = sample_indices(1000, 32, max_frames=40, every_seconds=1.0, fps=10)
    assert len(capped) == 40 and (capped[0], capped[-1]) == (0, 999)
    assert len(sample_indices(1000, every_seconds=2.5, fps=10)) == 41


def test_read_frames_decodes_the_sampled_frames(tmp_path):
    clip = face_clip(tmp_path / "a.mp4", seconds=2, fps=10)
    info, frames = read_frames(clip, frames_per_video=5)
    assert (info.width, info.height, info.n_frames, info.fps) == (192, 192, 20, 10.0)
    assert [f.index for f in frames] == [0, 5, 10, 14, 19]
    assert [f.timestamp for f in frames] == pytest.approx([0.0, 0.5, 1.0, 1.4, 1.9])
    assert all(f.image.shape == (192, 192, 3) and f.image.dtype == np.uint8 for f in frames)


@pytest.mark.parametrize(
    ("suffix", "codec", "fps"),
    [("avi", "mpeg4", 10), ("mov", "libx264", 10), ("mkv", "libx264", 10),
     ("webm", "libvpx-vp9", 10), ("mpg", "mpeg1video", 25)],
)  # fmt: skip
def test_every_common_container_reads(tmp_path, suffix, codec, fps):
    frame = np.full((96, 128, 3), 120, np.uint8)
    clip = still_clip(tmp_path / f"clip.{suffix}", frame, n_frames=8, fps=fps, codec=codec)
    info, frames = read_frames(clip, frames_per_video=4)
    assert (info.width, info.height) == (128, 96)
    assert len(frames) == 4


def test_rotation_metadata_is_honoured(tmp_path):
    stored = np.zeros((240, 320, 3), np.uint8)
    stored[:, :40] = 255  # a white band on the stored frame's left edge
    clip = set_display_rotation(still_clip(tmp_path / "phone.mp4", stored), 90)
    info, frames = read_frames(clip, frames_per_video=2)
    assert (info.rotation, info.width, info.height) == (90, 240, 320)
    image = frames[0].image
    assert image.shape == (320, 240, 3)
    assert image[:30].mean() > 200 and image[60:].mean() < 30  # turned clockwise: band on top


def test_variable_frame_rate_uses_timestamps(tmp_path):
    times = [0.0, 0.1, 0.15, 0.5, 1.2, 1.3]
    clip = variable_rate_clip(tmp_path / "vfr.mp4", times)
    _, frames = read_frames(clip, frames_per_video=6)
    assert [f.timestamp for f in frames] == pytest.approx(times, abs=1e-3)


def test_truncated_file_is_sampled_over_what_decodes(tmp_path):
    """Index first (faststart): the header promises 40 frames, only part of them decode."""
    frames = list(camera_frames(face_photo(), (192, 192), 40, seed=0))
    full = write_video(
        tmp_path / "full.mp4", frames, 10, container_options={"movflags": "faststart"}
    )
    cut = truncated_copy(full, tmp_path / "cut.mp4", keep=0.6)
    info, sampled = read_frames(cut, frames_per_video=4)
    assert info.n_frames == 40
    assert len(sampled) == 4
    assert 10 < sampled[-1].index < 39  # spread over what decodes, not the missing tail


def test_truncated_streamable_file_reads_what_is_there(tmp_path):
    full = face_clip(tmp_path / "full.mkv", seconds=4)
    info, sampled = read_frames(truncated_copy(full, tmp_path / "cut.mkv", 0.6), frames_per_video=4)
    assert 0 < info.n_frames < 40 and len(sampled) == 4


def test_truncated_mp4_without_index_is_a_decode_error(tmp_path):
    cut = truncated_copy(face_clip(tmp_path / "full.mp4", seconds=2), tmp_path / "cut.mp4", 0.5)
    with pytest.raises(VideoError) as caught:
        read_frames(cut, frames_per_video=4)
    assert caught.value.status == "decode_error"


@pytest.mark.parametrize(
    ("make", "status"),
    [
        (lambda p: p.write_bytes(b""), "empty_file"),
        (lambda p: p.write_text("this is not a video\n" * 50), "decode_error"),
        (audio_only, "no_video_stream"),
        (lambda p: None, "missing"),
        (lambda p: p.mkdir(), "read_error"),
        (unknown_codec_clip, "decode_error"),  # found by fuzz/run.py video
    ],
    ids=["empty", "text", "audio-only", "missing", "a-folder", "unknown-codec"],
)
def test_bad_files_raise_a_status_and_name_the_file(tmp_path, make, status):
    path = tmp_path / "bad video ü.mp4"
    make(path)
    with pytest.raises(VideoError) as caught:
        read_frames(path, frames_per_video=4)
    assert caught.value.status == status
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_check_video_wants_two_decodable_frames_not_a_still_image(tmp_path):
    photo = tmp_path / "photo.mp4"
    photo.write_bytes(cv2.imencode(".png", face_photo()[:64, :64])[1].tobytes())
    assert probe(photo).n_frames == 1, "FFmpeg opens a PNG as a one-frame video"
    with pytest.raises(VideoError, match=r"photo\.mp4: only 1 decodable frame\(s\)") as caught:
        check_video(photo)
    assert caught.value.status == "decode_error"
    two = still_clip(tmp_path / "two.mp4", np.zeros((32, 32, 3), np.uint8), n_frames=2)
    assert check_video(two).n_frames == 2
    with pytest.raises(VideoError) as caught:
        check_video(audio_only(tmp_path / "song.mp4"))
    assert caught.value.status == "no_video_stream"


def test_tiny_and_huge_frames(tmp_path):
    tiny = write_video(tmp_path / "1x1.mkv", [np.zeros((1, 1, 3), np.uint8)] * 3, 10, "ffv1")
    info, frames = read_frames(tiny, frames_per_video=2)
    assert (info.width, info.height, len(frames)) == (1, 1, 2)
    huge = write_video(tmp_path / "8k.mp4", [np.zeros((4320, 7680, 3), np.uint8)] * 2, 10)
    info = probe(huge)
    assert (info.width, info.height) == (7680, 4320)


def test_real_samples_decode(samples: Path):
    for clip in [*samples.glob("grid/*.mpg"), *samples.glob("dfdc/*/*.mp4")][:4]:
        info, frames = read_frames(clip, frames_per_video=8)
        assert len(frames) == 8
        assert frames[0].image.shape == (info.height, info.width, 3)


def decode_all(path: Path) -> list[tuple[float, np.ndarray]]:
    """The reference: every frame decoded from the start, in order (time, RGB pixels)."""
    with av.open(str(path)) as container:
        return [(float(f.time), f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]


def assert_as_decoded_from_the_start(frames: list, reference: list, wanted: list[int]) -> None:
    assert [f.index for f in frames] == wanted
    for frame in frames:
        time, image = reference[frame.index]
        assert frame.timestamp == pytest.approx(time, abs=1e-9)
        assert np.array_equal(frame.image, image), f"frame {frame.index} differs"


B_FRAMES = "keyint=20:min-keyint=20:scenecut=0:bframes=3:b-adapt=0:b-pyramid=normal"
OPEN_GOP = "keyint=20:min-keyint=20:scenecut=0:bframes=3:b-adapt=0:b-pyramid=normal:open-gop=1"
VFR_TIMES = np.cumsum(np.random.default_rng(0).uniform(0.01, 0.2, 180)).round(3).tolist()
TRICKY = {"b-frames.mp4": (B_FRAMES, None), "b-frames.mkv": (B_FRAMES, None),
          "open-gop.mp4": (OPEN_GOP, None), "open-gop.mkv": (OPEN_GOP, None),
          "vfr.mp4": (B_FRAMES, VFR_TIMES)}  # fmt: skip


@pytest.fixture(scope="module", params=list(TRICKY))
def tricky(request, tmp_path_factory) -> tuple[Path, list]:
    """A clip with B-frames, an open GOP or a variable frame rate, and its decode-all frames."""
    params, times = TRICKY[request.param]
    clip = coded_clip(tmp_path_factory.mktemp("tricky") / request.param, 180, params, times=times)
    return clip, decode_all(clip)


def has_leading_pictures(table: FrameTable) -> bool:
    """An open GOP: some frame decoded after a keyframe is shown before it."""
    keys = np.flatnonzero(table.keyframe)[1:]
    return any(table.pts[key + 1 : key + 4].min() < table.pts[key] for key in keys)


def test_seeking_gives_every_frame_exactly_as_decoding_from_the_start(tricky, monkeypatch):
    clip, reference = tricky
    table = frame_table(clip)
    assert table.seekable and len(table) == len(reference) == 180
    assert has_leading_pictures(table) == ("open-gop" in clip.name)

    def no_fallback(*args: object) -> None:
        raise AssertionError("a seek missed its frame and fell back to decoding from the start")

    monkeypatch.setattr(video, "_in_order", no_fallback)
    for index in range(len(reference)):  # each frame alone: one seek, then decoding on
        assert_as_decoded_from_the_start(list(iter_frames(clip, [index])), reference, [index])


@pytest.mark.parametrize("count", [5, 12, 40, 180])
def test_sparse_and_dense_samples_match_decode_all(tricky, count):
    clip, reference = tricky
    wanted = sample_indices(len(reference), count)
    _, frames = sample_frames(clip, frames_per_video=count)
    assert_as_decoded_from_the_start(list(frames), reference, wanted)
    seeks = sum(anchor is not None for anchor, _ in frame_table(clip).plan(wanted))
    assert seeks >= 3 if count == 5 else count < 40 or seeks == 0  # dense: straight through


def test_plan_seeks_to_keyframes_for_sparse_samples_only():
    """A 10-minute stream with a keyframe every 250 frames (x264's default GOP)."""
    n = 18_000
    table = FrameTable(np.arange(n), np.arange(n) % 250 == 0, clean=True, seekable=True)
    sparse = sample_indices(n, 32)
    runs = table.plan(sparse)
    assert [index for _, run in runs for index in run] == sparse
    assert all(anchor is not None and anchor == 250 * (run[0] // 250) for anchor, run in runs[1:])
    assert len(runs) == 32
    one_a_second = sample_indices(n, every_seconds=1.0, fps=30)
    assert len(table.plan(one_a_second)) < len(one_a_second) / 5  # several samples a GOP
    assert len(table.plan(list(range(0, n, 5)))) == 1  # dense: one pass from the start
    unseekable = FrameTable(table.pts, table.keyframe, clean=True, seekable=False)
    assert unseekable.plan(sparse) == [(None, sparse)]


def test_containers_without_exact_timestamps_are_decoded_from_the_start(tmp_path):
    clip = still_clip(
        tmp_path / "clip.mpg", np.full((64, 64, 3), 90, np.uint8), 30, 25, "mpeg1video"
    )
    assert not frame_table(clip).seekable
    _, frames = read_frames(clip, frames_per_video=3)
    assert [f.index for f in frames] == [0, 14, 29]


def test_frames_over_max_pixels_are_refused_before_decoding(tmp_path):
    clip = face_clip(tmp_path / "a.mp4")
    with pytest.raises(VideoError) as caught:
        sample_frames(clip, frames_per_video=4, max_pixels=192 * 192 - 1)
    assert caught.value.status == "decode_error"
    assert str(caught.value) == f"{clip}: 192x192 frames exceed --max-pixels ({192 * 192 - 1})"
    _, frames = sample_frames(clip, frames_per_video=4, max_pixels=192 * 192)
    assert len(list(frames)) == 4
