"""Dataset adapters on miniature layouts of dummy files, and on ../shared/samples when present."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from deepfake_detect.dataset_layouts import (
    ADAPTERS,
    MAX_ID_LENGTH,
    DatasetError,
    VideoItem,
    assign_splits,
    detect_format,
    discover,
    make_video_id,
)

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "samples"
SAFE_ID = re.compile(r"[A-Za-z0-9._-]+")


def touch(root: Path, *relatives: str) -> None:
    """Create tiny dummy files (adapters never decode them)."""
    for relative in relatives:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def by_name(items: list[VideoItem]) -> dict[str, VideoItem]:
    return {item.path.name: item for item in items}


def samples(name: str) -> Path:
    folder = SAMPLES / name
    if not folder.is_dir():
        pytest.skip(f"../shared/samples not present: {folder} is missing")
    return folder


# --- video ids -----------------------------------------------------------------------------------


def test_video_id_joins_root_name_and_relative_path() -> None:
    root = Path("/data/ffpp")
    path = root / "manipulated_sequences/Deepfakes/c23/videos/519_515.mp4"
    assert (
        make_video_id(root, path) == "ffpp__manipulated_sequences__Deepfakes__c23__videos__519_515"
    )


def test_video_id_ignores_folders_above_root() -> None:
    a = make_video_id(Path("/mnt/a/set"), Path("/mnt/a/set/real/x.mp4"))
    assert a == make_video_id(Path("/other/place/set"), Path("/other/place/set/real/x.mp4"))


def test_video_id_unicode_and_spaces_are_safe_and_distinct() -> None:
    root = Path("/data/set")
    names = ["real/my clip.mp4", "real/my_clip.mp4", "real/café.mp4", "real/cafè.mp4"]
    ids = [make_video_id(root, root / name) for name in names]
    assert all(SAFE_ID.fullmatch(video_id) for video_id in ids)
    assert len(set(ids)) == len(ids)
    assert ids[1] == "set__real__my_clip"  # nothing replaced: no hash
    assert re.fullmatch(r"set__real__my_clip-[0-9a-f]{8}", ids[0])


def test_video_id_long_paths_are_cut_and_stay_distinct() -> None:
    root = Path("/data/set")
    deep = "/".join(["folder" * 5] * 10)
    ids = {make_video_id(root, root / deep / f"{name}.mp4") for name in ("a", "b")}
    assert len(ids) == 2
    assert all(len(video_id) <= MAX_ID_LENGTH and SAFE_ID.fullmatch(video_id) for video_id in ids)


def test_discover_tells_apart_same_stem_with_different_extensions(tmp_path: Path) -> None:
    touch(tmp_path, "real/a.mp4", "real/a.avi", "fake/b.mp4")
    _, items = discover(tmp_path)
    assert len({item.video_id for item in items}) == 3
    assert [item.video_id for item in items] == sorted(item.video_id for item in items)


# --- folders -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("real", "fake"),
    [
        ("real", "fake"),
        ("Original", "FAKES"),
        ("pristine", "Deepfakes"),
        ("AUTHENTIC", "synthetic"),
    ],
)
def test_folders_accepts_synonyms_in_any_case(tmp_path: Path, real: str, fake: str) -> None:
    touch(tmp_path, f"{real}/r1.mp4", f"{real}/sub/r2.MOV", f"{fake}/f1.mp4", f"{real}/notes.txt")
    used, items = discover(tmp_path)
    assert used == "folders"
    labels = {name: item.label for name, item in by_name(items).items()}
    assert labels == {"r1.mp4": 0, "r2.MOV": 0, "f1.mp4": 1}
    assert all(item.dataset == "folders" and item.split is None for item in items)
    assert by_name(items)["r1.mp4"].group == "r1"


def test_folders_fake_subfolder_is_method_and_hidden_files_are_skipped(tmp_path: Path) -> None:
    touch(tmp_path, "real/a.mp4", "fake/faceswap/b.mp4", "fake/c.mp4", "fake/._c.mp4")
    items = by_name(ADAPTERS["folders"](tmp_path))
    assert set(items) == {"a.mp4", "b.mp4", "c.mp4"}
    assert (items["a.mp4"].method, items["b.mp4"].method, items["c.mp4"].method) == (
        "",
        "faceswap",
        "",
    )


def test_folders_one_class_is_enough(tmp_path: Path) -> None:
    touch(tmp_path, "real/a.mp4")
    assert [item.label for item in ADAPTERS["folders"](tmp_path)] == [0]


def test_folders_manifest_overrides_group_split_method(tmp_path: Path) -> None:
    touch(tmp_path, "real/clip1.mp4", "fake/clip2.mp4", "fake/clip3.mp4")
    write(
        tmp_path / "manifest.csv",
        "path,group,split,method\nreal/clip1.mp4,person_a,,\nfake/clip2.mp4,person_a,test,swap\n",
    )
    items = by_name(discover(tmp_path)[1])
    assert (items["clip1.mp4"].group, items["clip1.mp4"].split) == ("person_a", None)
    clip2 = items["clip2.mp4"]
    assert (clip2.group, clip2.split, clip2.method, clip2.label) == ("person_a", "test", "swap", 1)
    assert items["clip3.mp4"].group == "clip3"


def test_folders_manifest_needs_path_and_group(tmp_path: Path) -> None:
    touch(tmp_path, "real/a.mp4")
    write(tmp_path / "manifest.csv", "path,identity\nreal/a.mp4,x\n")
    with pytest.raises(DatasetError, match=r"manifest\.csv: missing column\(s\) group"):
        discover(tmp_path)


def test_folders_without_real_or_fake_folder_fails(tmp_path: Path) -> None:
    touch(tmp_path, "videos/a.mp4")
    with pytest.raises(DatasetError, match="no real or fake folder"):
        discover(tmp_path, "folders")


# --- FaceForensics++ -----------------------------------------------------------------------------


def make_ffpp(root: Path) -> None:
    touch(
        root,
        "original_sequences/youtube/c23/videos/004.mp4",
        "original_sequences/youtube/c23/videos/519.mp4",
        "original_sequences/youtube/c23/videos/515.mp4",
        "original_sequences/youtube/c23/videos/743.mp4",
        "manipulated_sequences/Deepfakes/c23/videos/519_515.mp4",
        "manipulated_sequences/FaceSwap/c23/videos/515_519.mp4",
        "manipulated_sequences/Face2Face/c23/videos/750_743.mp4",  # 750.mp4 absent
        "manipulated_sequences/Deepfakes/masks/videos/519_515.mp4",  # masks are not fakes
        "original_sequences/actors/c23/videos/01__walking_down_street.mp4",
        "manipulated_sequences/DeepFakeDetection/c23/videos/01_02__meeting_serious__YVGY8LOK.mp4",
        "original_sequences/actors/c23/videos/02__talking.mp4",
    )


def test_ffpp_labels_methods_and_union_find_groups(tmp_path: Path) -> None:
    make_ffpp(tmp_path)
    used, items = discover(tmp_path)
    assert used == "ffpp"
    assert len(items) == 10  # the mask video is left out
    got = {item.path.stem: (item.label, item.method, item.group) for item in items}
    assert got["004"] == (0, "", "004")
    assert got["519"] == got["515"] == (0, "", "515")
    assert got["519_515"] == (1, "Deepfakes", "515")
    assert got["515_519"] == (1, "FaceSwap", "515")
    assert got["750_743"] == (1, "Face2Face", "743")
    assert got["743"][2] == "743"
    assert got["01_02__meeting_serious__YVGY8LOK"] == (1, "DeepFakeDetection", "actor01")
    assert got["01__walking_down_street"][2] == got["02__talking"][2] == "actor01"
    assert all(item.split is None and not item.missing for item in items)


def test_ffpp_official_splits(tmp_path: Path) -> None:
    make_ffpp(tmp_path)
    splits = tmp_path / "splits"
    write(splits / "train.json", json.dumps([["519", "515"]]))
    write(splits / "val.json", json.dumps([["743", "750"]]))
    write(splits / "test.json", json.dumps([["004", "982"]]))
    items = {item.path.stem: item.split for item in discover(tmp_path, "ffpp", splits)[1]}
    assert items["519"] == items["515_519"] == items["519_515"] == "train"
    assert items["750_743"] == items["743"] == "val"
    assert items["004"] == "test"
    assert items["01__walking_down_street"] is None  # DFD actors are in no official split


def test_ffpp_missing_split_file_is_named(tmp_path: Path) -> None:
    make_ffpp(tmp_path)
    write(tmp_path / "splits/train.json", "[]")
    write(tmp_path / "splits/test.json", "[]")
    with pytest.raises(DatasetError, match=r"val\.json: FF\+\+ split file not found"):
        discover(tmp_path, splits_dir=tmp_path / "splits")


def test_splits_dir_is_ignored_by_other_formats(tmp_path: Path) -> None:
    touch(tmp_path, "real/a.mp4")  # one splits_dir may be given for several dataset folders
    assert discover(tmp_path, splits_dir=tmp_path / "absent")[1][0].split is None


# --- Celeb-DF ------------------------------------------------------------------------------------


def make_celebdf(root: Path) -> None:
    touch(
        root,
        "Celeb-real/id0_0000.mp4",
        "Celeb-real/id1_0003.mp4",
        "YouTube-real/00170.mp4",
        "Celeb-synthesis/id0_id16_0000.mp4",
        "Celeb-synthesis/id1_id0_0003.mp4",
    )


def test_celebdf_labels_groups_methods_without_test_list(tmp_path: Path) -> None:
    make_celebdf(tmp_path)
    used, items = discover(tmp_path)
    assert used == "celebdf"
    got = {item.path.name: (item.label, item.group, item.method, item.split) for item in items}
    assert got == {
        "id0_0000.mp4": (0, "id0", "", None),
        "id1_0003.mp4": (0, "id1", "", None),
        "00170.mp4": (0, "yt00170", "", None),
        "id0_id16_0000.mp4": (1, "id0", "synthesis", None),
        "id1_id0_0003.mp4": (1, "id1", "synthesis", None),
    }


def test_celebdf_test_list_inverts_labels_and_keeps_missing(tmp_path: Path) -> None:
    make_celebdf(tmp_path)
    write(
        tmp_path / "List_of_testing_videos.txt",
        "1 YouTube-real/00170.mp4\n0 Celeb-synthesis/id0_id16_0000.mp4\n"
        "0 Celeb-synthesis/id5_id9_0001.mp4\n1 Celeb-real/id7_0002.mp4\n\n",
    )
    items = by_name(discover(tmp_path)[1])
    assert items["00170.mp4"].split == items["id0_id16_0000.mp4"].split == "test"
    assert items["id0_0000.mp4"].split == items["id1_id0_0003.mp4"].split == "train"
    fake, real = items["id5_id9_0001.mp4"], items["id7_0002.mp4"]
    assert (fake.missing, fake.label, fake.group, fake.method, fake.split) == (
        True,
        1,
        "id5",
        "synthesis",
        "test",
    )
    assert (real.missing, real.label, real.group) == (True, 0, "id7")
    assert real.path == tmp_path / "Celeb-real/id7_0002.mp4"
    assert sum(item.missing for item in items.values()) == 2


def test_celebdf_test_list_with_project_convention_is_caught(tmp_path: Path) -> None:
    make_celebdf(tmp_path)
    write(tmp_path / "List_of_testing_videos.txt", "0 YouTube-real/00170.mp4\n")
    with pytest.raises(DatasetError, match=r"00170\.mp4 is listed with the other class's label"):
        discover(tmp_path)


def test_celebdf_bad_test_list_line_is_named(tmp_path: Path) -> None:
    make_celebdf(tmp_path)
    write(tmp_path / "List_of_testing_videos.txt", "1 YouTube-real/00170.mp4\nREAL x.mp4\n")
    with pytest.raises(DatasetError, match=r"List_of_testing_videos\.txt: line 2"):
        discover(tmp_path)


@pytest.mark.parametrize("listed", [".", "../../outside.mp4", "Celeb-real/../.."])
def test_celebdf_test_list_naming_a_file_outside_the_dataset_is_refused(
    tmp_path: Path, listed: str
) -> None:
    make_celebdf(tmp_path)
    write(tmp_path / "List_of_testing_videos.txt", f"1 Celeb-real/id0_0000.mp4\n1 {listed}\n")
    with pytest.raises(
        DatasetError, match=r"List_of_testing_videos\.txt: line 2: .* is not a file"
    ):
        discover(tmp_path)


def test_celebdf_test_list_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    # found by fuzz/run.py dataset_csv: a UnicodeDecodeError traceback
    make_celebdf(tmp_path)
    (tmp_path / "List_of_testing_videos.txt").write_bytes(b"1 Celeb-real/id\xff_0000.mp4\n")
    with pytest.raises(DatasetError, match=r"List_of_testing_videos\.txt: not UTF-8 text"):
        discover(tmp_path)


# --- DFDC ----------------------------------------------------------------------------------------


def make_dfdc_part(part: Path, entries: dict[str, dict[str, str]], present: list[str]) -> None:
    write(part / "metadata.json", json.dumps(entries))
    touch(part, *present)


def test_dfdc_single_part_with_listed_missing_and_unlisted_files(tmp_path: Path) -> None:
    part = tmp_path / "dfdc_train_part_0"
    entries = {
        "aaa.mp4": {"label": "FAKE", "split": "train", "original": "bbb.mp4"},
        "bbb.mp4": {"label": "REAL", "split": "train"},
        "ccc.mp4": {"label": "FAKE", "split": "train", "original": "bbb.mp4"},
        "ddd.mp4": {"label": "REAL", "split": "holdout"},
    }
    make_dfdc_part(part, entries, ["aaa.mp4", "bbb.mp4", "ddd.mp4", "unlisted.mp4"])
    used, items = discover(part)
    assert used == "dfdc"
    got = {i.path.name: (i.label, i.group, i.split, i.method, i.missing) for i in items}
    assert got == {
        "aaa.mp4": (1, "bbb", "train", "dfdc", False),
        "bbb.mp4": (0, "bbb", "train", "", False),
        "ccc.mp4": (1, "bbb", "train", "dfdc", True),
        "ddd.mp4": (0, "ddd", None, "", False),
    }
    assert by_name(items)["ccc.mp4"].path == part / "ccc.mp4"
    assert by_name(items)["aaa.mp4"].video_id == "dfdc_train_part_0__aaa"


def test_dfdc_parent_of_parts(tmp_path: Path) -> None:
    make_dfdc_part(tmp_path / "dfdc_train_part_0", {"a.mp4": {"label": "FAKE"}}, ["a.mp4"])
    make_dfdc_part(tmp_path / "part_b", {"b.mp4": {"label": "real"}}, ["b.mp4"])
    touch(tmp_path, "no_metadata/c.mp4")
    used, items = discover(tmp_path)
    assert used == "dfdc"
    assert [(i.video_id, i.label) for i in items] == [
        (f"{tmp_path.name}__dfdc_train_part_0__a", 1),
        (f"{tmp_path.name}__part_b__b", 0),
    ]


def test_dfdc_bad_json_is_named(tmp_path: Path) -> None:
    make_dfdc_part(tmp_path / "part_0", {"a.mp4": {"label": "FAKE"}}, ["a.mp4"])
    write(tmp_path / "part_1" / "metadata.json", "{not json")
    with pytest.raises(DatasetError, match=r"part_1/metadata\.json: not valid JSON"):
        discover(tmp_path)


def test_dfdc_bad_label_is_named(tmp_path: Path) -> None:
    make_dfdc_part(tmp_path, {"a.mp4": {"label": "MAYBE"}}, ["a.mp4"])
    with pytest.raises(DatasetError, match=r"metadata\.json: a\.mp4: label is not REAL or FAKE"):
        discover(tmp_path)


@pytest.mark.parametrize("name", ["", ".", "../../outside.mp4", "/etc/passwd"])
def test_dfdc_entry_naming_a_file_outside_its_part_is_refused(tmp_path: Path, name: str) -> None:
    # found by fuzz/run.py dataset_json: an IndexError for the name "" (the part itself)
    make_dfdc_part(tmp_path, {"a.mp4": {"label": "FAKE"}, name: {"label": "REAL"}}, ["a.mp4"])
    with pytest.raises(DatasetError, match=r"metadata\.json: .* is not a file inside"):
        discover(tmp_path)


def test_dfdc_with_only_missing_videos_has_no_videos(tmp_path: Path) -> None:
    make_dfdc_part(tmp_path, {"a.mp4": {"label": "FAKE"}}, [])
    with pytest.raises(DatasetError, match="no videos found"):
        discover(tmp_path)


# --- CSV -----------------------------------------------------------------------------------------


def test_csv_labels_paths_and_optional_columns(tmp_path: Path) -> None:
    touch(tmp_path, "lists/clips/a.mp4", "lists/clips/b.mp4", "elsewhere/c.mp4")
    absolute = tmp_path / "elsewhere/c.mp4"
    file = write(
        tmp_path / "lists/videos.csv",
        "path,label,split,group,method\n"
        "clips/a.mp4,REAL,train,,\n"
        "clips/b.mp4,fake,Test,alice,swap\n"
        f"{absolute},0,,,\n"
        "clips/gone.mp4,1,,,\n",
    )
    used, items = discover(file, allow_outside_root=True)
    assert used == "csv"
    got = {i.path.name: (i.label, i.split, i.group, i.method, i.missing) for i in items}
    assert got == {
        "a.mp4": (0, "train", "a", "", False),
        "b.mp4": (1, "test", "alice", "swap", False),
        "c.mp4": (0, None, "c", "", False),
        "gone.mp4": (1, None, "gone", "", True),
    }
    a = by_name(items)["a.mp4"]
    assert a.path == tmp_path / "lists/clips/a.mp4"
    assert a.video_id == "lists__clips__a"
    assert by_name(items)["c.mp4"].video_id == "lists__..__elsewhere__c"


def test_csv_paths_outside_its_folder_are_refused_row_by_row(tmp_path: Path) -> None:
    touch(tmp_path, "lists/clips/a.mp4", "secret.mp4", "other/b.mp4")
    file = write(
        tmp_path / "lists/videos.csv",
        "path,label\n"
        "clips/a.mp4,0\n"
        "clips/../clips/./a2.mp4,0\n"  # stays inside once normalised
        "../secret.mp4,1\n"
        f"{tmp_path / 'other/b.mp4'},1\n"
        "clips/../../other/c.mp4,1\n",
    )
    items = by_name(discover(file)[1])
    refused = {name for name, item in items.items() if item.outside_root}
    assert refused == {"secret.mp4", "b.mp4", "c.mp4"}
    assert items["a.mp4"].unavailable() is None
    assert items["a2.mp4"].unavailable()[0] == "missing"
    status, error = items["secret.mp4"].unavailable()
    assert status == "outside_root" and error == (
        f"{tmp_path / 'secret.mp4'}: outside the CSV's folder; refused (--allow-outside-root "
        "reads it)"
    )
    assert not items["c.mp4"].missing, "a refused file is not even looked at"
    allowed = by_name(discover(file, allow_outside_root=True)[1])
    assert not any(item.outside_root for item in allowed.values())
    assert allowed["c.mp4"].missing and not allowed["b.mp4"].missing


def test_csv_row_naming_the_csv_folder_itself_is_one_clear_error(tmp_path: Path) -> None:
    # found by fuzz/run.py dataset_csv: an IndexError while making the row's video id
    file = write(tmp_path / "v.csv", "path,label\na.mp4,1\n.,0\n")
    with pytest.raises(DatasetError, match=r"v\.csv: line 3: path '\.' is the CSV's own folder"):
        discover(file)


def test_csv_folder_with_one_csv(tmp_path: Path) -> None:
    touch(tmp_path, "a.mp4")
    write(tmp_path / "labels.csv", "path,label\na.mp4,1\n")
    assert [item.label for item in discover(tmp_path, "csv")[1]] == [1]
    write(tmp_path / "other.csv", "path,label\n")
    with pytest.raises(
        DatasetError, match=r"expected exactly one \.csv file, found labels\.csv, other\.csv$"
    ):
        discover(tmp_path, "csv")


def test_csv_bad_label_names_file_line_and_value(tmp_path: Path) -> None:
    touch(tmp_path, "a.mp4", "b.mp4")
    file = write(tmp_path / "v.csv", "path,label\na.mp4,1\nb.mp4,maybe\n")
    with pytest.raises(DatasetError, match=r"v\.csv: line 3: label 'maybe' is not 0, 1, real"):
        discover(file)


def test_csv_missing_column_is_named(tmp_path: Path) -> None:
    file = write(tmp_path / "v.csv", "file,label\na.mp4,1\n")
    with pytest.raises(DatasetError, match=r"missing column\(s\) path"):
        discover(file)


# --- detection and errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (["original_sequences/youtube/c23/videos/004.mp4"], "ffpp"),
        (["manipulated_sequences/Deepfakes/c23/videos/004_982.mp4"], "ffpp"),
        (["Celeb-real/id0_0000.mp4"], "celebdf"),
        (["YouTube-real/00170.mp4"], "celebdf"),
        (["metadata.json", "a.mp4"], "dfdc"),
        (["dfdc_train_part_3/metadata.json"], "dfdc"),
        (["Real/a.mp4", "manifest.csv"], "folders"),
    ],
)
def test_detect_format(tmp_path: Path, files: list[str], expected: str) -> None:
    touch(tmp_path, *files)
    assert detect_format(tmp_path) == expected


def test_detect_format_csv_file(tmp_path: Path) -> None:
    assert detect_format(write(tmp_path / "list.CSV", "path,label\n")) == "csv"


def test_detect_format_lists_clues_for_unknown_layout(tmp_path: Path) -> None:
    touch(tmp_path, "clips/a.mp4")
    with pytest.raises(DatasetError, match=r"cannot tell the dataset format; looked for .*dfdc"):
        detect_format(tmp_path)


def test_unknown_format_lists_known_names(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="known: auto, folders, ffpp, celebdf, dfdc, csv"):
        discover(tmp_path, "youtube")


@pytest.mark.parametrize("make", [lambda root: root.mkdir(), lambda root: None])
def test_empty_or_absent_root_has_no_videos(tmp_path: Path, make) -> None:
    root = tmp_path / "set"
    make(root)
    with pytest.raises(DatasetError, match=r"set: no videos found \(looked for .*\.mp4") as error:
        discover(root)
    assert "\n" not in str(error.value)


# --- assign_splits -------------------------------------------------------------------------------


def item(group: str, split: str | None = None, name: str = "") -> VideoItem:
    name = name or f"{group}_{split}"
    return VideoItem(Path(f"/d/{name}.mp4"), name, "csv", 0, group, split)


def many(n_groups: int, per_group: int = 3, split: str | None = None) -> list[VideoItem]:
    return [
        item(f"g{g:02d}", split, f"g{g:02d}_{i}") for g in range(n_groups) for i in range(per_group)
    ]


def split_groups(items: list[VideoItem]) -> dict[str, set[str]]:
    groups: dict[str, set[str]] = {}
    for each in items:
        groups.setdefault(each.group, set()).add(each.split or "")
    return groups


def test_assign_splits_is_deterministic_and_keeps_groups_together() -> None:
    items = many(20)
    first = assign_splits(items, 0.2, 0.1, seed=7)
    assert first == assign_splits(items, 0.2, 0.1, seed=7)
    assert first != assign_splits(items, 0.2, 0.1, seed=8)
    assert [i.video_id for i in first] == [i.video_id for i in items]
    assert all(len(splits) == 1 for splits in split_groups(first).values())
    counts = Counter(next(iter(s)) for s in split_groups(first).values())
    assert counts == {"train": 14, "val": 4, "test": 2}


def test_assign_splits_carves_val_and_test_from_all_train_dfdc_style() -> None:
    counts = Counter(i.split for i in assign_splits(many(10, 1, "train"), 0.1, 0.2, seed=0))
    assert counts == {"train": 7, "val": 1, "test": 2}


def test_assign_splits_keeps_carried_splits_and_carves_only_what_is_absent() -> None:
    items = [*many(10, 2, "train"), item("t1", "test"), item("t2", "test")]
    result = assign_splits(items, 0.2, 0.5, seed=1)
    assert [i.split for i in result[-2:]] == ["test", "test"]
    counts = Counter(i.split for i in result[:-2])
    assert counts == {"train": 16, "val": 4}  # no test carved from train: the dataset has one


def test_assign_splits_at_least_one_group_and_train_never_empty() -> None:
    counts = Counter(i.split for i in assign_splits(many(3, 1), 0.01, 0.01, seed=0))
    assert counts == {"train": 1, "val": 1, "test": 1}
    assert {i.split for i in assign_splits(many(2, 1), 0.5, 0.4, seed=0)} >= {"train"}
    assert {i.split for i in assign_splits(many(1, 2), 0.3, 0.3, seed=0)} == {"train"}
    assert {i.split for i in assign_splits(many(5, 1), 0.0, 0.0, seed=0)} == {"train"}


def test_assign_splits_rejects_bad_fractions() -> None:
    with pytest.raises(ValueError, match="sum below 1"):
        assign_splits(many(5), 0.5, 0.5, seed=0)


# --- real samples --------------------------------------------------------------------------------


def test_samples_ffpp() -> None:
    used, items = discover(samples("ffpp"))
    assert used == "ffpp"
    assert len(items) == 7
    assert Counter(i.label for i in items) == {0: 3, 1: 4}
    groups = {i.path.stem: i.group for i in items}
    assert groups["519_515"] == groups["519"]
    assert "750_743" in groups and "750" not in groups
    assert not any(i.missing for i in items)


def test_samples_dfdc() -> None:
    used, items = discover(samples("dfdc"))
    assert used == "dfdc"
    got = by_name(items)
    assert got["awnfpubqmo.mp4"].missing and got["awnfpubqmo.mp4"].label == 1
    assert sum(i.missing for i in items) == 1
    assert got["lynaeydofd.mp4"].label == 0
    assert {got[name].label for name in ("brtujopkby.mp4", "widuwuoiur.mp4")} == {1}
    assert got["brtujopkby.mp4"].group == "gnmmhlbzge"
