from pathlib import Path

import cv2
import numpy as np
import pytest
from media import STILL, face_photo, two_face_frame

from deepfake_detect import faces
from deepfake_detect.errors import DeepfakeDetectError
from deepfake_detect.faces import (
    Box,
    create_detector,
    crop_face,
    detect_faces,
    detect_in_frames,
    follow_faces,
    letterbox,
)
from deepfake_detect.synth import write_camera_clip
from deepfake_detect.video import read_frames, write_video

# Where Grace Hopper's face is in matplotlib's 512x600 photo (checked by eye).
HOPPER_FACE = Box(175, 125, 375, 335)


def test_unknown_detector_lists_the_known_ones():
    with pytest.raises(ValueError, match="known: yunet, dlib, opencv"):
        create_detector("retinaface")


@pytest.mark.parametrize("name", ["yunet", "dlib", "opencv"])
def test_detector_finds_the_face_in_a_known_clip(tmp_path, name):
    clip = write_camera_clip(face_photo(), tmp_path / "still.mp4", (300, 300), 10, 0.5, 0, STILL)
    _, frames = read_frames(clip, frames_per_video=2)
    # camera_frames scales the photo to cover the frame (x1.15) around its centre
    scale = max(300 / 512, 300 / 600) * 1.15
    expected = Box(
        (HOPPER_FACE.x0 - 256) * scale + 150, (HOPPER_FACE.y0 - 300) * scale + 150,
        (HOPPER_FACE.x1 - 256) * scale + 150, (HOPPER_FACE.y1 - 300) * scale + 150,
    )  # fmt: skip
    boxes = detect_faces(create_detector(name), frames[0].image)
    assert boxes, f"{name} found no face"
    assert boxes[0].iou(expected) > 0.5


def test_two_faces_come_largest_first():
    boxes = detect_faces(create_detector("dlib"), two_face_frame())
    assert len(boxes) == 2
    assert boxes[0].area > boxes[1].area
    assert boxes[0].x1 < 320 < boxes[1].x0  # the big face is on the left half


@pytest.mark.parametrize("name", ["yunet", "dlib"])
def test_no_face_in_noise(name):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    blobs = cv2.GaussianBlur(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), (0, 0), 6)
    assert detect_faces(create_detector(name), image) == []
    assert detect_faces(create_detector(name), blobs) == []


def test_small_frames_are_enlarged_for_the_detector():
    small = face_photo()[::4, ::4].copy()  # 128x150: the face is ~50 px, below HOG's minimum
    boxes = detect_faces(create_detector("dlib"), small)
    assert len(boxes) == 1
    assert boxes[0].iou(HOPPER_FACE.scaled(0.25)) > 0.5


def test_crop_is_square_with_margin_and_padded_at_borders():
    image = np.full((100, 200, 3), 200, np.uint8)
    crop = crop_face(image, Box(0, 0, 40, 40), margin=0.5, size=64)
    assert crop.shape == (64, 64, 3)
    # box 40 px + 20 px each side = 80 px square from (-20,-20): the top-left quarter is padding
    assert crop[:14, :14].max() == 0 and crop[20:, 20:].min() == 200


def test_crop_of_a_wide_box_uses_its_longer_side():
    image = np.arange(300 * 300 * 3, dtype=np.uint32).reshape(300, 300, 3).astype(np.uint8)
    crop = crop_face(image, Box(100, 140, 200, 160), margin=0.0, size=100)
    assert np.array_equal(crop, image[100:200, 100:200])


def test_letterbox_keeps_aspect_on_black():
    frame = np.full((100, 200, 3), 255, np.uint8)
    out = letterbox(frame, 64)
    assert out.shape == (64, 64, 3)
    assert out[:15].max() == 0 and out[-15:].max() == 0 and out[20:44].min() == 255


def test_identities_come_from_the_detection_schedule(tmp_path):
    """One tracker: a followed face keeps its identity, and a person who leaves the frame and
    comes back where they were is the same person again."""
    frame = two_face_frame()
    away = frame.copy()
    away[:, 320:] = 40  # the astronaut (right) steps out
    images = [frame] * 3 + [away] * 10 + [frame] * 4  # seen again at the scan of frame 16
    found = list(follow_faces(create_detector("yunet"), images, scan_every=4))
    identities = [sorted((box.x0 > 320, face) for face, box in faces) for faces in found]
    assert identities[0] == [(False, 0), (True, 1)]  # Grace Hopper first seen first
    assert all(ids == [(False, 0)] for ids in identities[3:13])
    assert identities[-1] == [(False, 0), (True, 1)]  # the astronaut is face 1 again


def test_crops_number_people_by_size_whatever_the_order_they_appear(tmp_path):
    from media import still_clip

    from deepfake_detect.crops import CropConfig, extract_faces

    small_first = two_face_frame()
    small_first[:, :320] = 40  # only the astronaut (the smaller face) in the first frames
    clip = still_clip(tmp_path / "two.mp4", small_first, n_frames=4)
    frames = [small_first] * 4 + [two_face_frame()] * 8
    clip = write_video(tmp_path / "two.mp4", frames, 10)
    crops = extract_faces(clip, CropConfig(frames_per_video=12, crop_size=32))
    by_face = {r["face_index"]: r["x0"] > 320 for r in crops.records}
    assert by_face == {0: False, 1: True}  # the larger face (Grace Hopper, left) is face 0


def test_yunet_gives_five_landmarks_on_the_face():
    image = face_photo()
    (box,) = create_detector("yunet").detect(image)
    assert box.iou(HOPPER_FACE) > 0.5 and 0.6 < box.score <= 1
    eye_a, eye_b, nose, mouth_a, mouth_b = box.points
    assert eye_a[0] < eye_b[0] and mouth_a[0] < mouth_b[0]
    assert max(eye_a[1], eye_b[1]) < nose[1] < min(mouth_a[1], mouth_b[1])
    assert all(box.x0 < x < box.x1 and box.y0 < y < box.y1 for x, y in box.points)


def test_landmarks_follow_a_face_found_in_a_region_or_a_scaled_copy():
    image = face_photo()
    direct = create_detector("yunet").detect(image)[0]
    scaled = detect_faces(create_detector("yunet"), image, detect_size=300)[0]
    near = faces.detect_near(create_detector("yunet"), image, direct)
    for other in (scaled, near):
        assert np.abs(other.points - direct.points).max() < 0.1 * (direct.x1 - direct.x0)


@pytest.mark.parametrize("damage", ["missing", "altered"])
def test_a_missing_or_altered_model_file_is_one_clear_error(tmp_path, monkeypatch, damage):
    import shutil

    assets = shutil.copytree(
        faces.ASSETS, tmp_path / "assets", ignore=shutil.ignore_patterns("grid")
    )
    model = assets / faces.YUNET_MODEL
    if damage == "missing":
        model.unlink()
    else:
        model.write_bytes(model.read_bytes()[:-1] + b"x")
    monkeypatch.setattr(faces, "ASSETS", assets)
    with pytest.raises(
        DeepfakeDetectError, match=f"{model}: face detector model {damage}"
    ) as error:
        create_detector("yunet")
    assert "\n" not in str(error.value)


def test_the_cli_stops_once_on_an_altered_model_file(tmp_path, monkeypatch):
    import shutil

    from media import face_clip
    from typer.testing import CliRunner

    from deepfake_detect.cli import app

    assets = shutil.copytree(
        faces.ASSETS, tmp_path / "assets", ignore=shutil.ignore_patterns("grid")
    )
    (assets / faces.YUNET_MODEL).write_bytes(b"not a model")
    monkeypatch.setattr(faces, "ASSETS", assets)
    (tmp_path / "data" / "real").mkdir(parents=True)
    face_clip(tmp_path / "data" / "real" / "a.mp4")
    command = ["preprocess", str(tmp_path / "data"), "--output-dir", str(tmp_path / "out")]
    result = CliRunner().invoke(app, [*command, "--num-workers", "0", "--quiet"])
    assert result.exit_code == 2
    assert "face detector model altered" in result.output and "Traceback" not in result.output


def test_real_sample_faces_found(samples: Path):
    detector = create_detector("dlib")
    clip = samples / "ffpp/original_sequences/youtube/c23/videos/004.mp4"
    _, frames = read_frames(clip, frames_per_video=4)
    found = [len(detect_faces(detector, f.image)) for f in frames]
    assert all(n >= 1 for n in found), found


def test_dlib_reads_frames_with_padded_rows_like_contiguous_ones():
    """PyAV pads the rows of odd-width frames; dlib must not read the padding as pixels."""
    photo = face_photo()[:, :427]  # a view whose rows are 512 px apart in memory
    assert not photo.flags["C_CONTIGUOUS"]
    detector = create_detector("dlib")
    assert detector.detect(photo) == detector.detect(np.ascontiguousarray(photo))
    assert len(detector.detect(photo)) == 1


class CountingDetector:
    """dlib, counting the pixels it is asked to look at."""

    name = "counting"

    def __init__(self) -> None:
        self.inner = create_detector("dlib")
        self.pixels = 0

    def detect(self, image: np.ndarray) -> list[Box]:
        self.pixels += image.shape[0] * image.shape[1]
        return self.inner.detect(image)


def _moving_face_frames(tmp_path: Path) -> list[np.ndarray]:
    clip = write_camera_clip(face_photo(), tmp_path / "moving.mp4", (480, 360), 10, 2.0, seed=3)
    return [f.image for f in read_frames(clip, frames_per_video=16)[1]]


def test_faces_followed_between_scans_match_scanning_every_frame_at_a_third_of_the_cost(
    tmp_path,
):
    images = _moving_face_frames(tmp_path)
    every, followed = CountingDetector(), CountingDetector()
    scanned = list(detect_in_frames(every, images, scan_every=1))
    found = list(detect_in_frames(followed, images, scan_every=8))
    assert all(len(boxes) == 1 for boxes in scanned)
    assert [len(boxes) for boxes in found] == [1] * len(images)
    assert min(a[0].iou(b[0]) for a, b in zip(scanned, found, strict=True)) > 0.6
    assert followed.pixels < every.pixels / 3


def test_a_face_that_leaves_the_frame_is_found_again_when_it_returns(tmp_path):
    images = _moving_face_frames(tmp_path)
    blank = np.zeros_like(images[0])
    images[5:9] = [blank] * 4
    found = detect_in_frames(create_detector("dlib"), images, scan_every=4)
    assert [len(boxes) for boxes in found] == [1] * 5 + [0] * 4 + [1] * (len(images) - 9)


def test_a_second_face_appearing_between_scans_is_added_at_the_next_scan():
    one_face = two_face_frame()
    one_face[:, 320:] = 0  # only the big face on the left
    images = [one_face] * 3 + [two_face_frame()] * 5
    found = list(detect_in_frames(create_detector("dlib"), images, scan_every=4))
    assert [len(boxes) for boxes in found] == [1, 1, 1, 1, 2, 2, 2, 2]
    assert all(boxes[0].x1 < 320 for boxes in found)  # the larger face stays first
    capped = detect_in_frames(create_detector("dlib"), images, scan_every=4, max_faces=1)
    assert [len(boxes) for boxes in capped] == [1] * 8


def test_a_video_without_faces_is_scanned_on_every_frame_at_the_larger_size_too():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8) for _ in range(3)]
    detector = CountingDetector()
    assert list(detect_in_frames(detector, images, scan_every=8)) == [[], [], []]
    assert detector.pixels == 3 * (640 * 360 + 1280 * 720)


def test_faces_are_yielded_frame_by_frame_as_the_images_come():
    """A long video streams through detection: each frame's faces come out before the next
    image is taken, so only one frame need be held."""
    taken = []

    def images():
        for index in range(4):
            taken.append(index)
            yield two_face_frame()

    found = detect_in_frames(create_detector("dlib"), images(), scan_every=2)
    for index, boxes in enumerate(found):
        assert taken == list(range(index + 1)) and len(boxes) == 2


def test_each_thread_gets_its_own_face_detector():
    # dlib's detector keeps scratch buffers between calls: shared by serve's two workers, it
    # gave one clip's faces to the other or crashed the process.
    import threading

    from deepfake_detect.crops import _detector

    other_thread: list[object] = []
    thread = threading.Thread(target=lambda: other_thread.append(_detector("dlib")))
    thread.start()
    thread.join()
    assert _detector("dlib") is _detector("dlib"), "built once per thread"
    assert other_thread[0] is not _detector("dlib")


def _rolled_clip(path: Path, roll: float) -> tuple[Path, np.ndarray]:
    """A still 360x360 clip of Grace Hopper shrunk to 0.6 and rolled by `roll` degrees, and
    where her 5 landmarks are in it: YuNet's on the upright full-size photo, moved by the
    same known transform."""
    photo = face_photo()
    upright = create_detector("yunet").detect(photo)[0].points
    matrix = cv2.getRotationMatrix2D((256, 300), roll, 0.6)
    matrix[:, 2] += (180 - 256, 180 - 300)
    frame = cv2.warpAffine(photo, matrix, (360, 360), borderMode=cv2.BORDER_REPLICATE)
    return write_video(path, [frame] * 6, 10), cv2.transform(upright[None], matrix)[0]


@pytest.mark.parametrize("roll", [0, 20])
def test_aligned_crops_put_the_eyes_on_the_template_and_level(tmp_path, roll):
    """Known geometry: the true landmarks, moved by each crop's transform, land within 3 px
    of the template; a face rolled 20 degrees comes out level."""
    from deepfake_detect.crops import CropConfig, aligning_transform
    from deepfake_detect.faces import AlignmentSmoother, template_points

    clip, truth = _rolled_clip(tmp_path / "rolled.mp4", roll)
    config = CropConfig(crop_size=128, align=True)
    template, smoother = template_points(128, 0.3), AlignmentSmoother()
    images = [f.image for f in read_frames(clip, frames_per_video=6)[1]]
    for image, found in zip(
        images, detect_in_frames(create_detector("yunet"), images), strict=True
    ):
        matrix = aligning_transform(image, found[0], config, smoother)
        eyes = cv2.transform(truth[None, :2], matrix)[0]
        assert np.abs(eyes - template[:2]).max() < 3, eyes - template[:2]
        tilt = np.degrees(np.arctan2(eyes[1, 1] - eyes[0, 1], eyes[1, 0] - eyes[0, 0]))
        assert abs(tilt) < 3


def test_preprocess_cuts_aligned_crops_with_that_transform(tmp_path):
    from deepfake_detect.crops import CropConfig, aligning_transform, extract_faces
    from deepfake_detect.faces import crop_aligned

    clip, _ = _rolled_clip(tmp_path / "rolled.mp4", 20)
    config = CropConfig(frames_per_video=1, crop_size=64, align=True)
    faces = extract_faces(clip, config)
    image = read_frames(clip, frames_per_video=1)[1][0].image
    matrix = aligning_transform(image, detect_faces(create_detector("yunet"), image)[0], config)
    assert np.abs(faces.crops[0].astype(int) - crop_aligned(image, matrix, 64)).mean() < 1
    unaligned = extract_faces(clip, CropConfig(frames_per_video=1, crop_size=64)).crops[0]
    assert np.abs(faces.crops[0].astype(int) - unaligned).mean() > 10


def test_alignment_needs_a_detector_with_landmarks():
    from deepfake_detect.crops import CropConfig

    with pytest.raises(ValueError, match="align needs a face detector that gives landmarks"):
        CropConfig(face_detector="dlib", align=True)
    with pytest.raises(ValueError, match="align makes square crops"):
        CropConfig(align=True, crop_shape="stretch")


def test_smoothing_steadies_jitter_and_follows_real_motion():
    from deepfake_detect.faces import AlignmentSmoother

    rng = np.random.default_rng(0)
    base = cv2.getRotationMatrix2D((100, 100), 0, 0.8)
    smoother, raw, smooth = AlignmentSmoother(), [], []
    for _ in range(40):
        jittered = base.copy()
        jittered[:, 2] += rng.normal(0, 1.0, 2)  # landmark noise: a pixel or so
        raw.append(jittered[:, 2].copy())
        smooth.append(smoother(jittered, 128)[:, 2].copy())
    assert np.std(smooth, axis=0).max() < 0.7 * np.std(raw, axis=0).max()
    moved = base.copy()
    moved[:, 2] += (40, 0)  # the head moved: taken at once, not dragged behind
    assert np.allclose(smoother(moved, 128), moved)
