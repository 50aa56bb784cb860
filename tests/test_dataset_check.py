"""`datasets list` and `datasets check` on the miniature layouts test_dataset_layouts builds,
filled with real tiny clips, then with files removed, truncated and added."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from media import truncated_copy
from test_dataset_layouts import make_celebdf, make_dfdc_part, make_ffpp, touch, write
from typer.testing import CliRunner

from deepfake_detect import dataset_check
from deepfake_detect.cli import app
from deepfake_detect.dataset_catalog import CATALOG
from deepfake_detect.dataset_check import check_dataset, verify_manifest, write_manifest
from deepfake_detect.dataset_layouts import DatasetError
from deepfake_detect.video import write_video

runner = CliRunner()
FFPP_SOURCES = ("youtube", "Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> bytes:
    """The bytes of a tiny decodable H.264 clip, copied into every dataset path."""
    frames = [np.full((32, 32, 3), 40 * i, np.uint8) for i in range(4)]
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", frames, 10).read_bytes()


def fill(root: Path, clip: bytes) -> None:
    """Replace every dummy video of a layout with the real clip."""
    for path in root.rglob("*.mp4"):
        path.write_bytes(clip)


def parts(check) -> dict[str, tuple[int | None, int, int, int, int]]:
    return {
        p.name: (p.expected, p.found, len(p.missing), len(p.unlisted), len(p.unreadable))
        for p in check.parts
    }


def complete_ffpp(root: Path, clip: bytes) -> Path:
    """One video per FF++ source at c23 (the official 1,000 are patched down to 1)."""
    touch(root, "original_sequences/youtube/c23/videos/000.mp4")
    for method in FFPP_SOURCES[1:]:
        touch(root, f"manipulated_sequences/{method}/c23/videos/000_001.mp4")
    fill(root, clip)
    return root


# --- datasets list -------------------------------------------------------------------------------


def test_datasets_list_names_each_dataset_its_counts_and_where_to_ask():
    result = runner.invoke(app, ["datasets", "list"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    for info in CATALOG.values():
        assert info.name in result.stdout
    for fact in ("720/140/140", "5,639", "518", "119,154", "50 parts", "kaggle.com"):
        assert fact in result.stdout


# --- FaceForensics++ -----------------------------------------------------------------------------


def test_ffpp_counts_each_source_and_compression_against_the_official_ones(tmp_path, clip):
    make_ffpp(tmp_path)
    fill(tmp_path, clip)
    check = check_dataset(tmp_path)
    got = parts(check)
    assert got["original_sequences/youtube/c23"] == (1000, 4, 0, 0, 0)
    assert got["manipulated_sequences/Deepfakes/c23"] == (1000, 1, 0, 0, 0)
    assert got["manipulated_sequences/FaceShifter/c23"] == (1000, 0, 0, 0, 0)  # absent
    assert got["manipulated_sequences/DeepFakeDetection/c23"] == (3068, 1, 0, 0, 0)
    assert got["original_sequences/actors/c23"] == (363, 2, 0, 0, 0)
    assert check.videos == check.probed == 10
    assert not check.complete
    assert any("splits/" in note for note in check.notes)


def test_ffpp_complete_then_a_file_removed_truncated_and_a_compression_added(
    tmp_path, clip, monkeypatch
):
    monkeypatch.setattr(dataset_check, "FFPP_VIDEOS_PER_SOURCE", 1)
    root = complete_ffpp(tmp_path / "ffpp", clip)
    assert check_dataset(root).complete
    (root / "manipulated_sequences/FaceSwap/c23/videos/000_001.mp4").unlink()
    broken = root / "manipulated_sequences/Face2Face/c23/videos/000_001.mp4"
    truncated_copy(broken, broken, keep=0.3)
    touch(root, "original_sequences/youtube/c40/videos/000.mp4")
    fill(root / "original_sequences/youtube/c40", clip)
    check = check_dataset(root)
    got = parts(check)
    assert got["manipulated_sequences/FaceSwap/c23"] == (1, 0, 0, 0, 0)
    assert got["manipulated_sequences/Face2Face/c23"] == (1, 1, 0, 0, 1)
    assert got["manipulated_sequences/Deepfakes/c40"] == (1, 0, 0, 0, 0)  # c40 is now expected
    assert got["original_sequences/youtube/c40"] == (1, 1, 0, 0, 0)
    unreadable = next(p for p in check.parts if p.unreadable).unreadable[0]
    assert str(broken) in unreadable
    assert not check.complete


def test_ffpp_official_split_files_are_counted(tmp_path, clip, monkeypatch):
    monkeypatch.setattr(dataset_check, "FFPP_VIDEOS_PER_SOURCE", 1)
    root = complete_ffpp(tmp_path, clip)
    write(root / "splits/train.json", json.dumps([["000", "001"]]))
    write(root / "splits/val.json", json.dumps([["002", "003"]]))
    write(root / "splits/test.json", json.dumps([["004", "005"], ["006", "007"]]))
    monkeypatch.setattr(dataset_check, "FFPP_SPLIT_VIDEOS", {"train": 2, "val": 2, "test": 4})
    assert check_dataset(root).complete
    monkeypatch.setattr(dataset_check, "FFPP_SPLIT_VIDEOS", {"train": 2, "val": 2, "test": 2})
    check = check_dataset(root)
    assert check.problems == [f"{root / 'splits/test'}.json: 4 video ids; the official split has 2"]


# --- Celeb-DF ------------------------------------------------------------------------------------


def test_celebdf_test_list_missing_videos_and_counts(tmp_path, clip, monkeypatch):
    make_celebdf(tmp_path)
    fill(tmp_path, clip)
    counts = {"Celeb-real": 2, "YouTube-real": 1, "Celeb-synthesis": 2}
    monkeypatch.setattr(dataset_check, "CELEBDF_V2_COUNTS", counts)
    monkeypatch.setattr(dataset_check, "CELEBDF_V2_TEST_VIDEOS", 2)
    check = check_dataset(tmp_path)
    assert check.problems == [
        f"{tmp_path / 'List_of_testing_videos.txt'}: the official test list is missing"
    ]
    write(
        tmp_path / "List_of_testing_videos.txt",
        "1 YouTube-real/00170.mp4\n0 Celeb-synthesis/id0_id16_0000.mp4\n",
    )
    assert check_dataset(tmp_path).complete
    (tmp_path / "YouTube-real/00170.mp4").unlink()
    check = check_dataset(tmp_path)
    assert parts(check)["YouTube-real"] == (1, 0, 1, 0, 0)
    assert "missing: YouTube-real/00170.mp4" in dataset_check.check_findings(check)


# --- DFDC ----------------------------------------------------------------------------------------


def dfdc_entries(*names: str) -> dict[str, dict[str, str]]:
    return {name: {"label": "REAL", "split": "train"} for name in names}


def test_dfdc_part_listed_but_absent_unlisted_and_truncated(tmp_path, clip):
    part = tmp_path / "dfdc_train_part_0"
    make_dfdc_part(part, dfdc_entries("a.mp4", "b.mp4", "c.mp4"), ["a.mp4", "b.mp4"])
    fill(part, clip)
    assert parts(check_dataset(part)) == {"dfdc_train_part_0": (3, 2, 1, 0, 0)}
    touch(part, "stray.mp4")
    fill(part, clip)
    truncated_copy(part / "b.mp4", part / "b.mp4", keep=0.2)
    check = check_dataset(part)
    assert parts(check) == {"dfdc_train_part_0": (3, 2, 1, 1, 1)}
    assert check.parts[0].missing == ["c.mp4"] and check.parts[0].unlisted == ["stray.mp4"]


def test_dfdc_parts_absent_and_total_against_the_official_one(tmp_path, clip, monkeypatch):
    make_dfdc_part(tmp_path / "dfdc_train_part_0", dfdc_entries("a.mp4"), ["a.mp4"])
    fill(tmp_path, clip)
    check = check_dataset(tmp_path)
    assert check.problems[0].startswith("49 of the 50 training parts absent: dfdc_train_part_1, ")
    monkeypatch.setattr(dataset_check, "DFDC_PARTS", 2)
    monkeypatch.setattr(dataset_check, "DFDC_TRAIN_VIDEOS", 2)
    make_dfdc_part(tmp_path / "dfdc_train_part_1", dfdc_entries("b.mp4"), ["b.mp4"])
    fill(tmp_path, clip)
    assert check_dataset(tmp_path).complete
    monkeypatch.setattr(dataset_check, "DFDC_TRAIN_VIDEOS", 3)
    assert "list 2 videos; DFDC's training set has 3" in check_dataset(tmp_path).problems[0]


def test_sample_probes_only_that_many(tmp_path, clip):
    make_dfdc_part(
        tmp_path, dfdc_entries(*(f"{i}.mp4" for i in range(6))), [f"{i}.mp4" for i in range(6)]
    )
    fill(tmp_path, clip)
    check = check_dataset(tmp_path, sample=2)
    assert check.probed == 2 and sum(p.probed for p in check.parts) == 2
    assert check.notes == ["probed a random sample of 2 of the 6 videos"]


def test_folders_without_official_counts_are_complete_when_every_video_reads(tmp_path, clip):
    touch(tmp_path, "real/a.mp4", "fake/swap/b.mp4")
    fill(tmp_path, clip)
    check = check_dataset(tmp_path)
    assert parts(check) == {"real": (None, 1, 0, 0, 0), "fake/swap": (None, 1, 0, 0, 0)}
    assert check.complete
    (tmp_path / "real/a.mp4").write_bytes(b"")
    check = check_dataset(tmp_path)
    assert not check.complete and "file is empty" in check.parts[1].unreadable[0]


# --- manifest ------------------------------------------------------------------------------------


def test_manifest_verifies_a_copy_and_names_every_difference(tmp_path, clip):
    source = tmp_path / "here"
    make_dfdc_part(source, dfdc_entries("a.mp4", "b.mp4"), ["a.mp4", "b.mp4"])
    fill(source, clip)
    manifest = source / "manifest.csv"  # inside the dataset: left out of itself
    assert write_manifest(source, manifest) == 3
    rows = manifest.read_text().splitlines()
    assert rows[0] == "path,size,sha256" and rows[1].startswith(f"a.mp4,{len(clip)},")
    copy = tmp_path / "there"
    shutil.copytree(source, copy)
    manifest = copy / "manifest.csv"  # the copy's own, as a user would verify it
    assert verify_manifest(copy, manifest).matches
    data = bytearray((copy / "a.mp4").read_bytes())
    data[100] ^= 0xFF
    (copy / "a.mp4").write_bytes(bytes(data))
    (copy / "b.mp4").unlink()
    touch(copy, "extra.txt")
    result = verify_manifest(copy, manifest)
    assert result.changed == ["a.mp4: SHA-256 differs from the manifest's"]
    assert result.missing == ["b.mp4"]
    assert result.added == ["extra.txt"]


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("name,bytes\na.mp4,1\n", "line 2: expected path,size,sha256"),
        ("path,size,sha256\na.mp4,big,00\n", "line 2: expected path,size,sha256"),
        ("path,size,sha256\n../../etc/passwd,1,00\n", "line 2: '../../etc/passwd' is not inside"),
    ],
)
def test_a_bad_manifest_is_one_line_naming_it(tmp_path, text, fault):
    manifest = write(tmp_path / "m.csv", text)
    with pytest.raises(DatasetError, match=f"m.csv: {fault}"):
        verify_manifest(tmp_path, manifest)


# --- the command ---------------------------------------------------------------------------------


def test_check_command_exit_codes_table_and_json(tmp_path, clip):
    part = tmp_path / "dfdc_train_part_0"
    make_dfdc_part(part, dfdc_entries("a.mp4", "b.mp4"), ["a.mp4", "b.mp4"])
    fill(part, clip)
    manifest, report = tmp_path / "m.csv", tmp_path / "check.json"
    result = runner.invoke(app, ["datasets", "check", str(part), "--manifest", str(manifest)])
    assert result.exit_code == 0, result.output
    assert "2 videos, 2 probed: complete" in result.output
    (part / "b.mp4").unlink()
    arguments = ["datasets", "check", str(part), "--verify", str(manifest), "--json", str(report)]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 1
    assert "missing: b.mp4" in result.output and "not on disk: b.mp4" in result.output
    assert "usable with gaps" in result.output
    document = json.loads(report.read_text())
    assert document["complete"] is False and document["manifest"]["missing"] == ["b.mp4"]


@pytest.mark.parametrize(
    "arguments",
    [["datasets", "check", "NOWHERE"], ["datasets", "check", ".", "--verify", "absent.csv"]],
)
def test_check_command_bad_usage_exits_2_with_one_line(tmp_path, clip, arguments, monkeypatch):
    touch(tmp_path, "real/a.mp4")
    fill(tmp_path, clip)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, arguments)
    assert result.exit_code == 2
    assert result.output.count("error:") == 1 and "Traceback" not in result.output


def test_samples_dfdc_listed_but_absent(samples):
    check = check_dataset(samples / "dfdc")
    missing = [m for part in check.parts for m in part.missing]
    assert missing == ["dfdc_train_part_0/awnfpubqmo.mp4"]
    assert all(not part.unreadable for part in check.parts)
