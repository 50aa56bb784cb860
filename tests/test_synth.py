import itertools
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from media import face_clip, face_photo, truncated_copy

from deepfake_detect.blend import (
    Drift,
    MaskShape,
    SelfBlendSource,
    SourceJitter,
    face_mask,
    face_swap,
    self_blend,
)
from deepfake_detect.corpus import corpus_paths
from deepfake_detect.dataset_layouts import ADAPTERS
from deepfake_detect.faces import Box, create_detector, detect_faces
from deepfake_detect.synth import (
    SynthError,
    corpus_face_sources,
    generate_dataset,
    load_face_source,
    read_video_source,
)
from deepfake_detect.video import read_frames

# 128 px: on AVX-512 CPUs x264's macroblock-tree code encodes differently from run to run
# unless the width is a multiple of 128 px; the default 256 is one too.
SIZE, FPS, SECONDS = 128, 10.0, 1.0
IDENTITIES = {"astronaut", "camera", "grace_hopper", "my_face"}
# Where the faces are in the packaged photos scaled to 256x256 (found by dlib on the originals).
ASTRONAUT_FACE = Box(87, 37, 137, 87)
HOPPER_FACE = Box(87, 55, 187, 141)


def photo_256(name: str) -> np.ndarray:
    return cv2.resize(face_photo(name), (256, 256), interpolation=cv2.INTER_AREA)


def grown(box: Box, factor: float) -> Box:
    cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
    hw, hh = factor * (box.x1 - box.x0) / 2, factor * (box.y1 - box.y0) / 2
    return Box(cx - hw, cy - hh, cx + hw, cy + hh)


def outside(box: Box, shape: tuple[int, int]) -> np.ndarray:
    keep = np.ones(shape, bool)
    keep[max(0, int(box.y0)) : int(box.y1) + 1, max(0, int(box.x0)) : int(box.x1) + 1] = False
    return keep


def inside(box: Box) -> tuple[slice, slice]:
    return slice(int(box.y0), int(box.y1)), slice(int(box.x0), int(box.x1))


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=-1)


# --- blending primitives -----------------------------------------------------------------------


@pytest.mark.parametrize("box", [Box(80, 60, 180, 170), Box(-30, 150, 70, 260)])
def test_mask_is_feathered_and_stays_inside_the_frame(box: Box) -> None:
    mask = face_mask((240, 320), box, np.random.default_rng(0))
    assert mask.shape == (240, 320) and mask.dtype == np.float32
    assert mask.min() >= 0 and mask.max() <= 1
    assert mask.max() > 0.99
    assert ((mask > 0.05) & (mask < 0.95)).sum() > 500  # a soft edge, not a hard cut-out
    assert np.all(mask[outside(grown(box, 2.2), mask.shape)] == 0)


def test_masks_deform_differently_per_draw() -> None:
    box = Box(80, 60, 180, 170)
    first, second = (face_mask((240, 320), box, np.random.default_rng(s)) for s in (1, 2))
    assert np.abs(first - second).max() > 0.3


def test_landmark_mask_follows_the_hull() -> None:
    box = Box(80, 60, 180, 170)
    landmarks = np.array([[120, 100], [200, 100], [160, 200]], np.float32)  # right of the box
    mask = face_mask((240, 320), box, np.random.default_rng(0), landmarks)
    assert mask[140, 160] > 0.9  # the hull's centre
    assert mask[115, 90] < 0.1  # inside the box, outside the hull


def test_self_blend_differs_only_around_the_face() -> None:
    image = photo_256("astronaut")
    fake, weights = self_blend(image, ASTRONAUT_FACE, np.random.default_rng(3))
    assert fake.shape == image.shape and fake.dtype == np.uint8
    diff = changed(fake, image)
    assert np.all(diff[outside(grown(ASTRONAUT_FACE, 2.2), diff.shape)] == 0)
    assert diff[inside(ASTRONAUT_FACE)].mean() > 5
    assert np.all(weights[diff > 0] > 0)


def test_face_swap_changes_the_face_region() -> None:
    target = photo_256("astronaut")
    source = photo_256("grace_hopper")
    rng = np.random.default_rng(0)
    fake, weights = face_swap(target, ASTRONAUT_FACE, source, HOPPER_FACE, rng)
    _, blend_weights = self_blend(target, ASTRONAUT_FACE, np.random.default_rng(0))
    diff = changed(fake, target)
    assert np.all(diff[outside(grown(ASTRONAUT_FACE, 2.2), diff.shape)] == 0)
    assert diff[inside(ASTRONAUT_FACE)].mean() > 20  # another person's face, not a tint
    assert weights.shape == blend_weights.shape == target.shape[:2]


def test_a_grey_image_gets_a_grey_fake() -> None:
    grey = cv2.cvtColor(
        cv2.cvtColor(photo_256("astronaut"), cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB
    )
    fake, _ = face_swap(
        grey, ASTRONAUT_FACE, photo_256("grace_hopper"), HOPPER_FACE, np.random.default_rng(0)
    )
    assert np.abs(fake[..., 0].astype(int) - fake[..., 2]).max() <= 1


def test_drifting_parameters_move_smoothly_inside_their_ranges() -> None:
    for kind in (MaskShape, SourceJitter):
        drift = Drift.random(kind, np.random.default_rng(0))
        frames = [vars(drift.at(i / 25)) for i in range(50)]
        for name, (low, high) in kind.RANGES.items():
            values = np.array([frame[name] for frame in frames])
            assert low <= values.min() and values.max() <= high, name
            assert np.abs(np.diff(values)).max() < 0.05 * (high - low), name


def test_self_blend_source_makes_reproducible_pseudo_fakes() -> None:
    crop = cv2.resize(face_photo()[60:400, 105:445], (128, 128))  # ~ a stage-1 crop
    first, again, other = SelfBlendSource(7), SelfBlendSource(7), SelfBlendSource(8)
    fakes = [first(crop) for _ in range(3)]
    assert all(f.shape == crop.shape and f.dtype == np.uint8 for f in fakes)
    assert all(np.any(f != crop) for f in fakes)
    assert not np.array_equal(fakes[0], fakes[1])  # each call draws anew
    assert all(np.array_equal(f, again(crop)) for f in fakes)
    assert not np.array_equal(fakes[0], other(crop))
    assert np.all(changed(fakes[0], crop)[[0, 0, -1, -1], [0, -1, 0, -1]] == 0)  # the corners


# --- face sources ------------------------------------------------------------------------------


def write_image(path: Path, image: np.ndarray) -> Path:
    cv2.imwrite(str(path), image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path


def test_a_greyscale_photo_is_read_as_rgb(tmp_path: Path) -> None:
    grey = cv2.cvtColor(face_photo(), cv2.COLOR_RGB2GRAY)
    image = load_face_source(write_image(tmp_path / "grey.png", grey))
    assert image.shape == (*grey.shape, 3) and image.dtype == np.uint8


def test_a_video_gives_a_frame_with_a_face(tmp_path: Path) -> None:
    image = load_face_source(face_clip(tmp_path / "clip.mp4"))
    assert image.shape == (192, 192, 3)


def noise_photo(path: Path) -> Path:
    rng = np.random.default_rng(0)
    return write_image(
        path, cv2.GaussianBlur(rng.integers(0, 255, (200, 200, 3), np.uint8), (0, 0), 4)
    )


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (noise_photo, "no face found"),
        (lambda p: write_image(p, face_photo()[::10, ::10].copy()), "too small"),
        (lambda p: p.write_bytes(b"\xff\xd8 not really a jpeg") and p, "not a readable image"),
        (lambda p: p.write_bytes(b"") and p, "not a readable image"),
        (lambda p: p, "file not found"),
    ],
    ids=["no-face", "tiny", "corrupt", "empty", "missing"],
)
def test_bad_photos_fail_naming_the_file(tmp_path: Path, make, problem: str) -> None:
    path = tmp_path / "photo.png"
    make(path)
    with pytest.raises(SynthError, match=problem) as error:
        load_face_source(path)
    assert str(path) in str(error.value)


def test_a_broken_video_fails_naming_the_file(tmp_path: Path) -> None:
    broken = truncated_copy(face_clip(tmp_path / "clip.mp4"), tmp_path / "broken.mp4", 0.02)
    with pytest.raises(SynthError) as error:
        load_face_source(broken)
    assert str(broken) in str(error.value)


# --- datasets ----------------------------------------------------------------------------------


def make_dataset(root: Path, user_face: Path, on_clip=None) -> pd.DataFrame:
    return generate_dataset(
        root, videos=8, faces=[user_face], size=SIZE, fps=FPS, seconds=SECONDS, on_clip=on_clip,
        corpus=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def user_face(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("faces")
    return write_image(folder / "my face.png", cv2.cvtColor(face_photo(), cv2.COLOR_RGB2GRAY))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, user_face: Path) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("synth")
    clips: list[Path] = []
    manifest = make_dataset(root, user_face, clips.append)
    assert clips == [root / p for p in manifest.path]
    return root, manifest


def test_dataset_has_the_real_fake_layout_and_a_manifest(dataset) -> None:
    root, manifest = dataset
    assert (root / "manifest.csv").is_file()
    assert list(manifest.columns[:6]) == [
        "path",
        "label",
        "group",
        "method",
        "source_identity",
        "seed",
    ]
    assert {"opacity", "red", "jpeg_quality", "colour_transfer"} <= set(manifest.columns)
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.mp4")) == sorted(
        manifest.path
    )
    for row in manifest.itertuples():
        assert row.path.startswith("fake/" if row.label else "real/")
    assert set(manifest.group) == IDENTITIES
    assert set(manifest.group[manifest.label == 0]) == IDENTITIES  # each identity has a real
    fakes = manifest[manifest.label == 1]
    assert set(fakes.method) == {"self_blend", "face_swap"}
    swaps = fakes[fakes.method == "face_swap"]
    assert all(swaps.source_identity != swaps.group)
    blends = fakes[fakes.method == "self_blend"]
    assert all(blends.source_identity == blends.group)


def test_the_folders_adapter_reads_the_identities(dataset) -> None:
    root, manifest = dataset
    items = ADAPTERS["folders"](root)
    by_path = {item.path.relative_to(root).as_posix(): item for item in items}
    assert set(by_path) == set(manifest.path)
    for row in manifest.itertuples():
        assert (by_path[row.path].label, by_path[row.path].group) == (row.label, row.group)


def test_clips_decode_with_the_project_reader(dataset) -> None:
    root, manifest = dataset
    for path in manifest.path:
        info, frames = read_frames(root / path)
        assert (info.width, info.height) == (SIZE, SIZE)
        assert len(frames) == round(FPS * SECONDS)


def test_fake_clips_change_smoothly_over_time(dataset) -> None:
    root, manifest = dataset
    path = manifest.path[manifest.method == "self_blend"].iloc[0]
    _, frames = read_frames(root / path)
    steps = [changed(a.image, b.image).mean() for a, b in itertools.pairwise(frames)]
    assert max(steps) < 3 * np.median(steps)  # no frame jumps more than the camera's motion


def test_stage_one_finds_the_faces(dataset) -> None:
    root, manifest = dataset
    detector = create_detector("yunet")  # stage 1's default; it sees the cameraman's profile
    for row in manifest.itertuples():
        _, frames = read_frames(root / row.path, frames_per_video=5)
        found = sum(bool(detect_faces(detector, frame.image)) for frame in frames)
        assert found == 5, row.path


def test_same_seed_same_dataset(dataset, user_face: Path, tmp_path: Path) -> None:
    root, manifest = dataset
    again = make_dataset(tmp_path, user_face)
    assert (tmp_path / "manifest.csv").read_bytes() == (root / "manifest.csv").read_bytes()
    for path in manifest.path:
        first, second = read_frames(root / path)[1], read_frames(tmp_path / path)[1]
        assert all(np.array_equal(a.image, b.image) for a, b in zip(first, second, strict=True))
    assert list(again.path) == list(manifest.path)


def test_another_seed_another_dataset(dataset, user_face: Path, tmp_path: Path) -> None:
    _, manifest = dataset
    other = generate_dataset(
        tmp_path, videos=2, seed=1, size=SIZE, fps=FPS, seconds=0.2, corpus=False
    )
    assert list(other.seed) != list(manifest.seed[:2])


def test_an_output_folder_with_videos_is_refused(dataset) -> None:
    root, _ = dataset
    with pytest.raises(SynthError, match="already holds videos"):
        generate_dataset(root, videos=1)


@pytest.mark.parametrize(
    ("option", "problem"),
    [({"videos": 0}, "videos"), ({"size": 255}, "even"), ({"fake_fraction": 1.5}, "fake_fraction")],
)
def test_bad_requests_are_refused(tmp_path: Path, option: dict, problem: str) -> None:
    with pytest.raises(SynthError, match=problem):
        generate_dataset(tmp_path, **option)


# --- landmark-shaped masks ---------------------------------------------------------------------


def _inside_polygon(polygon: np.ndarray, shape: tuple[int, int], grow: float) -> np.ndarray:
    centre = polygon.mean(axis=0)
    grown_polygon = np.round(centre + (polygon - centre) * grow).astype(np.int32)
    inside = np.zeros(shape, np.uint8)
    cv2.fillPoly(inside, [grown_polygon], 1)
    return inside.astype(bool)


def test_a_mask_from_five_landmarks_covers_the_face_they_imply() -> None:
    """Eyes, nose and mouth inside; brow and chin too (the region reaches past the 5 points);
    nothing far outside the implied face region, however the draw deforms it."""
    from deepfake_detect.blend import face_region

    photo = face_photo()
    (box,) = create_detector("yunet").detect(photo)
    region = face_region(box.points)
    eyes, mouth = box.points[:2].mean(axis=0), box.points[3:].mean(axis=0)
    chin, brow = mouth + 0.4 * (mouth - eyes), eyes - 0.25 * (mouth - eyes)
    far = ~_inside_polygon(region, photo.shape[:2], 2.0)  # the feather reaches out
    for seed in range(5):
        mask = face_mask(photo.shape[:2], box, np.random.default_rng(seed), box.points)
        for x, y in [*box.points, chin, brow]:
            assert mask[round(y), round(x)] > 0.5, (seed, x, y)
        assert mask[far].max() < 0.01
    ellipse = face_mask(photo.shape[:2], box, np.random.default_rng(0))
    assert (
        np.abs(
            ellipse - face_mask(photo.shape[:2], box, np.random.default_rng(0), box.points)
        ).max()
        > 0.5
    )


def test_fakes_blend_under_the_region_the_landmarks_imply_when_the_face_has_them() -> None:
    """synth's fakes: a box with landmarks (YuNet's, moved with the camera) shapes the mask;
    one without keeps the ellipse in the box."""
    from media import BLEND_JITTER, BLEND_SHAPE

    from deepfake_detect.blend import face_region, self_blend_with

    photo = face_photo()
    (box,) = create_detector("yunet").detect(photo)
    _, weights = self_blend_with(photo, box, BLEND_SHAPE, BLEND_JITTER)
    assert weights[~_inside_polygon(face_region(box.points), photo.shape[:2], 1.6)].max() < 0.01
    bare = Box(box.x0, box.y0, box.x1, box.y1)
    _, ellipse = self_blend_with(photo, bare, BLEND_SHAPE, BLEND_JITTER)
    assert np.abs(weights - ellipse).max() > 0.5


def test_training_self_blends_follow_the_crop_landmarks(tmp_path) -> None:
    """--self-blend on crops whose crops.csv has landmarks: the pseudo-fake changes the face
    the 5 points imply, in crop pixels, and little else."""
    from deepfake_detect.blend import SelfBlendSource, face_region
    from deepfake_detect.crops import CropConfig, landmarks_in_crops
    from deepfake_detect.preprocess import VideoDataProcessor
    from deepfake_detect.training_data import self_blend_guides

    face_clip(tmp_path / "data" / "real" / "a.mp4", size=256)
    out = tmp_path / "out"
    VideoDataProcessor([tmp_path / "data"], out, frames_per_video=3, crop_size=128,
                       num_workers=0, progress=False).run()  # fmt: skip
    margin, landmarks = self_blend_guides(out)
    (npy,) = (out / "faces").glob("*.npy")
    crops = np.load(npy)
    (points,) = landmarks.values()
    assert margin == 0.3 and points.shape == (3, 5, 2)
    detector = create_detector("yunet")
    for crop, expected in zip(crops, points, strict=True):
        found = detector.detect(cv2.resize(crop, (256, 256)))[0].points / 2
        assert np.abs(found - expected).max() < 7  # where YuNet sees them in the crop
        blended = SelfBlendSource(seed=0, margin=margin)(crop, expected)
        moved = np.abs(blended.astype(int) - crop).max(axis=-1) > 8
        assert (
            moved.any()
            and not moved[~_inside_polygon(face_region(expected), (128, 128), 2.0)].any()
        )
    records = pd.read_csv(out / "crops.csv")
    aligned = landmarks_in_crops(records, CropConfig(crop_size=128, align=True))
    assert np.allclose(aligned[0], aligned[-1])  # on the template


# --- the shipped corpus ------------------------------------------------------------------------


def test_the_shipped_corpus_is_twelve_people_ten_of_them_on_video() -> None:
    sources = corpus_face_sources()
    assert len(sources) == len(corpus_paths()) == 12
    assert len({s.identity for s in sources}) == 12
    videos = [s for s in sources if s.frames]
    assert len(videos) == 10
    for source in videos:
        assert len(source.frames) == len(source.boxes) == 75  # GRID: 3 s at 25 fps
        assert source.box.x1 - source.box.x0 > 60  # a face found, not a speck


def test_a_video_source_plays_every_frame_forward_then_back(tmp_path: Path) -> None:
    source = read_video_source(face_clip(tmp_path / "clip.mp4"))
    n = len(source.frames)
    assert n >= 10 and len(source.boxes) == n
    step = 1 / source.fps
    assert source.at(0)[0] is source.frames[0]
    assert source.at(3 * step)[0] is source.frames[3]
    assert source.at((n - 1 + 2) * step)[0] is source.frames[n - 3]  # bounced off the end
    assert source.at(2 * (n - 1) * step)[0] is source.frames[0]


def test_default_dataset_films_the_corpus_and_packaged_photos(tmp_path: Path) -> None:
    manifest = generate_dataset(tmp_path, videos=30, size=SIZE, fps=FPS, seconds=0.4)
    assert len(set(manifest.group)) == 15  # 10 GRID speakers, 2 portraits, 3 packaged photos
    assert {"grid_bbaf2n", "obama", "astronaut"} <= set(manifest.group)
    _, frames = read_frames(tmp_path / manifest.path[manifest.group == "grid_bbaf2n"].iloc[0])
    assert len(frames) == round(FPS * 0.4)


def test_identity_splits_go_to_the_manifest_and_swaps_stay_inside_a_split(tmp_path: Path) -> None:
    names = [s.identity for s in corpus_face_sources()] + ["astronaut", "camera", "grace_hopper"]
    splits = {name: ("test" if i % 5 == 0 else "val" if i % 5 == 1 else "train")
              for i, name in enumerate(names)}  # fmt: skip
    manifest = generate_dataset(
        tmp_path, videos=40, size=SIZE, fps=FPS, seconds=0.2, identity_splits=splits
    )
    assert all(manifest.split == manifest.group.map(splits))
    swaps = manifest[manifest.method == "face_swap"]
    assert len(swaps) >= 5
    assert all(swaps.source_identity.map(splits) == swaps.split)
    items = ADAPTERS["folders"](tmp_path)
    assert {item.split for item in items} == {"train", "val", "test"}
    with pytest.raises(SynthError, match="lacks a split"):
        generate_dataset(tmp_path / "other", videos=2, identity_splits={"obama": "train"})


def test_identity_splits_never_share_a_person_and_the_seed_decides() -> None:
    from deepfake_detect.synth import split_identities

    names = [f"person{i}" for i in range(15)]
    drawn = {seed: split_identities(names, n_val=2, n_test=3, seed=seed) for seed in range(6)}
    for splits in drawn.values():
        assert set(splits) == set(names)  # each person in exactly one split
        counts = {split: list(splits.values()).count(split) for split in ("train", "val", "test")}
        assert counts == {"train": 10, "val": 2, "test": 3}
    assert len({tuple(sorted(s.items())) for s in drawn.values()}) > 1
    assert split_identities(names, 2, 3, seed=4) == drawn[4]
    with pytest.raises(SynthError, match="at least one must be left"):
        split_identities(names[:5], 2, 3)


@pytest.mark.parametrize("n_people", [3, 4, 15])
def test_every_identity_gets_both_methods_in_two_rounds(n_people: int) -> None:
    from deepfake_detect.faces import Box
    from deepfake_detect.synth import FaceSource, _plan

    image = np.zeros((64, 64, 3), np.uint8)
    people = [FaceSource(f"p{i}", image, Box(0, 0, 8, 8)) for i in range(n_people)]
    plans = _plan(people, videos=4 * n_people, seed=0, fake_fraction=0.5)
    fakes = [plan for plan in plans if plan.method]
    for person in people:
        methods = {plan.method for plan in fakes if plan.target.identity == person.identity}
        assert methods == {"self_blend", "face_swap"}, person.identity
