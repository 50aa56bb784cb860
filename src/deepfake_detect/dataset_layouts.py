"""Dataset layout adapters: turn FF++, Celeb-DF, DFDC, real/fake folders or a CSV into VideoItems.

Adapters only read paths and metadata files, never video content, so discovering a dataset of
100k videos takes seconds. Labels are always 0 = real, 1 = fake.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

import pandas as pd

from deepfake_detect.errors import DeepfakeDetectError
from deepfake_detect.status import Status
from deepfake_detect.video import VIDEO_EXTENSIONS, is_video_file

SPLITS = ("train", "val", "test")
REAL_FOLDER_NAMES = frozenset({"real", "original", "originals", "pristine", "genuine", "authentic"})
FAKE_FOLDER_NAMES = frozenset(
    {"fake", "fakes", "manipulated", "deepfake", "deepfakes", "synthesis", "synthetic"}
)
MANIFEST_NAME = "manifest.csv"
FFPP_MARKERS = ("original_sequences", "manipulated_sequences")
# FF++ stores mask videos beside the compressions (<method>/masks/videos): they are not fakes.
FFPP_NOT_A_COMPRESSION = "masks"
CELEBDF_FOLDER_LABELS = {"Celeb-real": 0, "YouTube-real": 0, "Celeb-synthesis": 1}
CELEBDF_TEST_LIST = "List_of_testing_videos.txt"
DFDC_METADATA = "metadata.json"
MAX_ID_LENGTH = 150
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_FORMAT_CLUES = (
    "a .csv file (csv), original_sequences/ or manipulated_sequences/ (ffpp), "
    f"{', '.join(CELEBDF_FOLDER_LABELS)} or {CELEBDF_TEST_LIST} (celebdf), "
    f"{DFDC_METADATA} here or one folder down (dfdc), real/fake folders (folders)"
)


class DatasetError(DeepfakeDetectError, ValueError):
    """A dataset that cannot be read as asked; the message is one line naming the file and fault."""


@dataclass(frozen=True)
class VideoItem:
    """One video of a dataset with everything stage 1 records about where it came from."""

    path: Path
    video_id: str
    dataset: str
    label: int
    group: str
    split: str | None
    method: str = ""
    missing: bool = False
    outside_root: bool = False

    def unavailable(self) -> tuple[Status, str] | None:
        """Why this video is not read, when it is not: its status and a one-line error."""
        if self.outside_root:
            return Status.OUTSIDE_ROOT, (
                f"{self.path}: outside the CSV's folder; refused (--allow-outside-root reads it)"
            )
        if self.missing:
            return Status.MISSING, f"{self.path}: listed by the dataset but not on disk"
        return None


# --- ids and paths -------------------------------------------------------------------------------


def _absolute(path: Path) -> Path:
    """Absolute path without resolving symlinks (a symlinked dataset keeps its own folder name)."""
    return Path(os.path.abspath(path))


def _relative_parts(root: Path, path: Path) -> tuple[str, ...]:
    """Parts of `path` relative to `root` (with `..` for a CSV listing files beside its folder)."""
    try:
        return Path(os.path.relpath(_absolute(path), _absolute(root))).parts
    except ValueError:  # another drive on Windows
        return _absolute(path).parts[1:]


def _is_inside(folder: Path, path: Path) -> bool:
    """Whether absolute `path` names a file under absolute `folder` (by name: `..` is
    resolved, symbolic links are not)."""
    return path != folder and os.path.commonpath([folder, path]) == str(folder)


def _listed_inside(root: Path, relative: str, where: str) -> None:
    """Refuse a file that a dataset's own list (not a user's CSV) names outside its folder."""
    if not _is_inside(_absolute(root), _absolute(root / relative)):
        raise DatasetError(f"{where}: {relative!r} is not a file inside {_absolute(root)}")


def _digest(text: str) -> str:
    data = text.encode("utf-8", "surrogateescape")
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()[:8]


def make_video_id(root: Path, path: Path) -> str:
    """A unique, file-name-safe id: root folder name + relative path without extension.

    Parts are joined with `__`; characters outside `[A-Za-z0-9._-]` become `_`, and then (or
    when the id is cut to MAX_ID_LENGTH) a hash of the relative path keeps distinct files apart.
    """
    parts = _relative_parts(root, path)
    raw = [_absolute(root).name or "root", *parts[:-1], PurePosixPath(parts[-1]).stem]
    safe = [_UNSAFE_ID_CHARS.sub("_", part) for part in raw]
    video_id = "__".join(safe)
    if safe != raw or len(video_id) > MAX_ID_LENGTH:
        digest = _digest("/".join(parts))
        video_id = f"{video_id[: MAX_ID_LENGTH - len(digest) - 1]}-{digest}"
    return video_id


def _is_plain_video(path: Path) -> bool:
    """A video file that is not hidden (macOS copies leave `._name.mp4` resource files)."""
    return is_video_file(path) and not path.name.startswith(".") and path.is_file()


def _iter_videos(folder: Path) -> Iterator[Path]:
    for path in folder.rglob("*"):
        hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
        if not hidden and _is_plain_video(path):
            yield path


def find_videos(folder: Path) -> list[Path]:
    """Video files anywhere under `folder`, sorted; hidden files and folders are skipped."""
    return sorted(_iter_videos(folder)) if folder.is_dir() else []


def _subfolders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _no_videos(root: Path) -> DatasetError:
    looked_for = ", ".join(sorted(VIDEO_EXTENSIONS))
    return DatasetError(f"{root}: no videos found (looked for {looked_for})")


# --- metadata files ------------------------------------------------------------------------------


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _read_text(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DatasetError(f"{file}: not UTF-8 text ({_one_line(error)})") from None


def _load_json(file: Path) -> object:
    try:
        return json.loads(_read_text(file))
    except json.JSONDecodeError as error:
        raise DatasetError(f"{file}: not valid JSON ({_one_line(error)})") from error


def _read_table(file: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """A CSV as stripped strings with lower-case column names; `required` columns must exist."""
    try:
        table = pd.read_csv(file, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DatasetError(f"{file}: not a readable CSV ({_one_line(error)})") from error
    table.columns = [str(column).strip().lower() for column in table.columns]
    absent = [column for column in required if column not in table.columns]
    if absent:
        raise DatasetError(
            f"{file}: missing column(s) {', '.join(absent)} (found {', '.join(table.columns)})"
        )
    return table.map(str.strip)


def _parse_split(value: str, where: str) -> str | None:
    if not value:
        return None
    if value.lower() not in SPLITS:
        raise DatasetError(f"{where}: split {value!r} is not one of {', '.join(SPLITS)}")
    return value.lower()


def _parse_label(value: str, where: str) -> int:
    labels = {"0": 0, "1": 1, "real": 0, "fake": 1}
    if value.lower() not in labels:
        raise DatasetError(f"{where}: label {value!r} is not 0, 1, real or fake")
    return labels[value.lower()]


# --- folders -------------------------------------------------------------------------------------


def _folder_label(name: str) -> int | None:
    if name.lower() in REAL_FOLDER_NAMES:
        return 0
    return 1 if name.lower() in FAKE_FOLDER_NAMES else None


def _read_manifest(root: Path) -> dict[str, dict[str, str | None]]:
    """Per-video overrides from `manifest.csv` (path relative to root -> group, split, method)."""
    file = root / MANIFEST_NAME
    if not file.is_file():
        return {}
    overrides: dict[str, dict[str, str | None]] = {}
    for index, row in enumerate(_read_table(file, ("path", "group")).to_dict("records")):
        where = f"{file}: line {index + 2}"
        fields: dict[str, str | None] = {"group": row["group"], "method": row.get("method", "")}
        fields = {name: value for name, value in fields.items() if value}
        if row.get("split"):
            fields["split"] = _parse_split(row["split"], where)
        overrides[PurePosixPath(row["path"].replace("\\", "/")).as_posix()] = fields
    return overrides


def scan_folders(root: Path) -> list[VideoItem]:
    """Videos under real/fake folders (synonyms, any case); manifest.csv may override group etc.

    A fake nested in a subfolder (fake/faceswap/x.mp4) takes the subfolder name as its method.
    """
    labelled = [(d, _folder_label(d.name)) for d in _subfolders(root)]
    labelled = [(folder, label) for folder, label in labelled if label is not None]
    if not labelled:
        names = ", ".join(sorted(REAL_FOLDER_NAMES | FAKE_FOLDER_NAMES))
        raise DatasetError(f"{root}: no real or fake folder (looked for any of {names})")
    overrides = _read_manifest(root)
    items = []
    for folder, label in labelled:
        for path in find_videos(folder):
            inner = path.relative_to(folder).parts
            method = inner[0] if label == 1 and len(inner) > 1 else ""
            item = VideoItem(
                path, make_video_id(root, path), "folders", label, path.stem, None, method
            )
            items.append(replace(item, **overrides.get(path.relative_to(root).as_posix(), {})))
    return items


# --- FaceForensics++ -----------------------------------------------------------------------------


def _ffpp_videos(folder: Path) -> list[Path]:
    """`<folder>/<source or method>/<compression>/videos/*`, FF++'s download layout."""
    return sorted(
        path
        for path in folder.glob("*/*/videos/*")
        if path.parts[-3] != FFPP_NOT_A_COMPRESSION and _is_plain_video(path)
    )


def _ffpp_ids(stem: str) -> list[str]:
    """Identities in an FF++ name: `004`, `A_B` (target, source), DFD `01_02__scene` (actors)."""
    if "__" in stem:
        return [f"actor{actor}" for actor in stem.split("__", 1)[0].split("_")]
    return stem.split("_")


def _smallest_connected(id_lists: Iterable[list[str]]) -> dict[str, str]:
    """Union-find: map every id to the smallest id it is connected to through a shared video."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for ids in id_lists:
        roots = [find(x) for x in ids]
        for root in roots:
            parent[root] = min(roots)  # the root of a component stays its smallest id
    return {x: find(x) for x in parent}


def read_ffpp_splits(splits_dir: Path) -> dict[str, str]:
    """Id -> split from FF++'s official train.json, val.json, test.json (lists of id pairs)."""
    split_of: dict[str, str] = {}
    for split in SPLITS:
        file = splits_dir / f"{split}.json"
        if not file.is_file():
            raise DatasetError(f"{file}: FF++ split file not found (need train, val, test .json)")
        pairs = _load_json(file)
        if not isinstance(pairs, list) or not all(
            isinstance(pair, list) and len(pair) == 2 for pair in pairs
        ):
            raise DatasetError(f"{file}: expected a JSON list of [id, id] pairs")
        split_of.update((str(x), split) for pair in pairs for x in pair)
    return split_of


def scan_ffpp(root: Path, splits_dir: Path | None = None) -> list[VideoItem]:
    """FF++ originals (real) and manipulated sequences (fake, method = folder name).

    Group = smallest id joined to the video through fakes (A_B joins A and B). With the
    official split files, a video whose ids all fall in one file gets that split.
    """
    videos = [(path, 0, "") for path in _ffpp_videos(root / "original_sequences")]
    videos += [(path, 1, path.parts[-4]) for path in _ffpp_videos(root / "manipulated_sequences")]
    ids_of = {path: _ffpp_ids(path.stem) for path, _, _ in videos}
    group_of = _smallest_connected(ids_of.values())
    split_of = read_ffpp_splits(splits_dir) if splits_dir is not None else {}
    items = []
    for path, label, method in videos:
        splits = {split_of.get(x) for x in ids_of[path]}
        split = splits.pop() if len(splits) == 1 else None
        group = group_of[ids_of[path][0]]
        items.append(
            VideoItem(path, make_video_id(root, path), "ffpp", label, group, split, method)
        )
    return items


# --- Celeb-DF ------------------------------------------------------------------------------------


def _read_celebdf_test_list(file: Path) -> dict[str, int]:
    """Relative path -> project label; the list writes 1 for REAL, so it is inverted here."""
    listed = {}
    for number, line in enumerate(_read_text(file).splitlines(), start=1):
        if not line.strip():
            continue
        flag, _, relative = line.strip().partition(" ")
        if flag not in ("0", "1") or not relative.strip():
            raise DatasetError(
                f"{file}: line {number}: expected '<1|0> <folder>/<video>', got {line!r}"
            )
        _listed_inside(file.parent, relative.strip(), f"{file}: line {number}")
        listed[relative.strip()] = 1 - int(flag)
    return listed


def _celebdf_item(root: Path, relative: str, label: int, split: str | None) -> VideoItem:
    path = root / relative
    folder = PurePosixPath(relative).parts[0]
    group = f"yt{path.stem}" if folder == "YouTube-real" else path.stem.split("_")[0]
    method = "synthesis" if label == 1 else ""
    missing = not path.is_file()
    return VideoItem(
        path, make_video_id(root, path), "celebdf", label, group, split, method, missing
    )


def scan_celebdf(root: Path) -> list[VideoItem]:
    """Celeb-DF v1/v2: label by folder, group by identity (target identity for fakes).

    With List_of_testing_videos.txt, listed videos are "test" (kept as missing when absent)
    and the rest "train"; otherwise splits are None.
    """
    on_disk = {
        path.relative_to(root).as_posix(): label
        for folder, label in CELEBDF_FOLDER_LABELS.items()
        for path in find_videos(root / folder)
    }
    list_file = root / CELEBDF_TEST_LIST
    listed = _read_celebdf_test_list(list_file) if list_file.is_file() else None
    if listed is None:
        return [_celebdf_item(root, rel, label, None) for rel, label in on_disk.items()]
    for relative, label in listed.items():
        if on_disk.get(relative, label) != label:
            raise DatasetError(f"{list_file}: {relative} is listed with the other class's label")
    return [
        _celebdf_item(root, rel, label, "test" if rel in listed else "train")
        for rel, label in (on_disk | listed).items()
    ]


# --- DFDC ----------------------------------------------------------------------------------------


def _dfdc_item(root: Path, part: Path, name: str, entry: object) -> VideoItem:
    if not isinstance(entry, dict) or str(entry.get("label")).upper() not in ("REAL", "FAKE"):
        raise DatasetError(f"{part / DFDC_METADATA}: {name}: label is not REAL or FAKE")
    _listed_inside(part, name, f"{part / DFDC_METADATA}")
    label = int(str(entry["label"]).upper() == "FAKE")
    path = part / name
    original = entry.get("original") if label else None
    group = PurePosixPath(str(original)).stem if original else path.stem
    split = entry.get("split") if entry.get("split") in SPLITS else None
    method = "dfdc" if label else ""
    missing = not path.is_file()
    return VideoItem(path, make_video_id(root, path), "dfdc", label, group, split, method, missing)


def dfdc_parts(root: Path) -> list[Path]:
    """The DFDC part folders of `root`: itself when it holds metadata.json, else its subfolders
    that do."""
    if (root / DFDC_METADATA).is_file():
        return [root]
    return [part for part in _subfolders(root) if (part / DFDC_METADATA).is_file()]


def scan_dfdc(root: Path) -> list[VideoItem]:
    """DFDC part folders: every file listed in a part's metadata.json (absent ones as missing).

    `root` is one part or a folder of parts; videos not in metadata.json have no label and are
    skipped.
    """
    items = []
    for part in dfdc_parts(root):
        entries = _load_json(part / DFDC_METADATA)
        if not isinstance(entries, dict):
            raise DatasetError(f"{part / DFDC_METADATA}: expected an object of file name -> entry")
        items += [_dfdc_item(root, part, name, entry) for name, entry in sorted(entries.items())]
    return items


# --- CSV -----------------------------------------------------------------------------------------


def _csv_file(root: Path) -> Path:
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise DatasetError(f"{root}: not a .csv file")
        return root
    found = sorted(p for p in root.iterdir() if p.suffix.lower() == ".csv" and p.is_file())
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise DatasetError(f"{root}: expected exactly one .csv file, found {names}")
    return found[0]


def scan_csv(root: Path, allow_outside_root: bool = False) -> list[VideoItem]:
    """Rows `path,label[,split,group,method]` of a CSV; paths are relative to its folder.

    A path that leads outside that folder (`../`, an absolute path) is kept as a row marked
    `outside_root` and never read, unless `allow_outside_root`: a CSV from someone else must
    not make stage 1 read /etc/passwd. (Symbolic links inside the folder are followed: they
    are the folder owner's choice.)
    """
    file = _csv_file(root)
    folder = _absolute(file.parent)
    items = []
    for index, row in enumerate(_read_table(file, ("path", "label")).to_dict("records")):
        where = f"{file}: line {index + 2}"
        if not row["path"]:
            raise DatasetError(f"{where}: empty path")
        path = _absolute(folder / row["path"])
        if path == folder:
            raise DatasetError(f"{where}: path {row['path']!r} is the CSV's own folder")
        refused = not allow_outside_root and not _is_inside(folder, path)
        item = VideoItem(
            path=path,
            video_id=make_video_id(file.parent, path),
            dataset="csv",
            label=_parse_label(row["label"], where),
            group=row.get("group") or path.stem,
            split=_parse_split(row.get("split", ""), where),
            method=row.get("method", ""),
            missing=not refused and not path.is_file(),
            outside_root=refused,
        )
        items.append(item)
    return items


ADAPTERS: dict[str, Callable[..., list[VideoItem]]] = {
    "folders": scan_folders,
    "ffpp": scan_ffpp,
    "celebdf": scan_celebdf,
    "dfdc": scan_dfdc,
    "csv": scan_csv,
}


# --- discovery -----------------------------------------------------------------------------------


def detect_format(root: Path) -> str:
    """The adapter name for `root`, judged from its top-level names (see _FORMAT_CLUES)."""
    root = _absolute(root)
    if root.is_file() and root.suffix.lower() == ".csv":
        return "csv"
    if not root.exists():
        raise _no_videos(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder or a .csv file")
    if any((root / name).is_dir() for name in FFPP_MARKERS):
        return "ffpp"
    if any((root / name).exists() for name in [*CELEBDF_FOLDER_LABELS, CELEBDF_TEST_LIST]):
        return "celebdf"
    parts = [root, *_subfolders(root)]
    if any((part / DFDC_METADATA).is_file() for part in parts):
        return "dfdc"
    if any(_folder_label(folder.name) is not None for folder in _subfolders(root)):
        return "folders"
    if next(_iter_videos(root), None) is None:
        raise _no_videos(root)
    raise DatasetError(f"{root}: cannot tell the dataset format; looked for {_FORMAT_CLUES}")


def _with_unique_ids(items: list[VideoItem], id_root: Path) -> list[VideoItem]:
    """Tell apart ids that clash (a.mp4 beside a.avi) with a hash of the relative path."""
    paths = Counter(item.path for item in items)
    twice = [path for path, count in paths.items() if count > 1]
    if twice:
        raise DatasetError(f"{twice[0]}: listed more than once")
    clashes = Counter(item.video_id for item in items)

    def unique(item: VideoItem) -> VideoItem:
        if clashes[item.video_id] == 1:
            return item
        relative = "/".join(_relative_parts(id_root, item.path))
        return replace(item, video_id=f"{item.video_id}-{_digest(relative)}")

    return [unique(item) for item in items]


def discover(
    root: Path,
    dataset_format: str = "auto",
    splits_dir: Path | None = None,
    allow_outside_root: bool = False,
) -> tuple[str, list[VideoItem]]:
    """Find a dataset's videos with the named adapter (or the detected one).

    Returns the format used and the items sorted by video_id. `splits_dir` (FF++ official
    split files) is read for ffpp only, so one value can serve several dataset folders;
    `allow_outside_root` lets a CSV list files outside its folder.
    """
    if dataset_format != "auto" and dataset_format not in ADAPTERS:
        known = ", ".join(["auto", *ADAPTERS])
        raise DatasetError(f"unknown dataset format {dataset_format!r} (known: {known})")
    root = _absolute(root)
    if not root.exists():
        raise _no_videos(root)
    used = detect_format(root) if dataset_format == "auto" else dataset_format
    if used == "ffpp" and splits_dir is not None:
        items = scan_ffpp(root, splits_dir=_absolute(splits_dir))
    elif used == "csv":
        items = scan_csv(root, allow_outside_root)
    else:
        items = ADAPTERS[used](root)
    if all(item.missing for item in items):
        raise _no_videos(root)
    items = _with_unique_ids(items, root.parent if root.is_file() else root)
    return used, sorted(items, key=lambda item: item.video_id)


# --- splits --------------------------------------------------------------------------------------


def _group_count(fraction: float, n_groups: int) -> int:
    count = round(fraction * n_groups)
    return max(count, 1) if fraction > 0 and n_groups >= 3 else count


def assign_splits(
    items: list[VideoItem], val_fraction: float, test_fraction: float, seed: int
) -> list[VideoItem]:
    """Give every item a split, carving val/test by group where the dataset names none.

    Items keep a split they carry. For "val" and "test" that no item carries, a fraction of the
    groups of unsplit and "train" items is drawn (seeded); everything else becomes "train".
    """
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction and test_fraction must be >= 0 with a sum below 1, "
            f"got {val_fraction} and {test_fraction}"
        )
    carried = {item.split for item in items}
    groups = sorted({item.group for item in items if item.split in (None, "train")})
    random.Random(seed).shuffle(groups)
    n_test = _group_count(test_fraction, len(groups)) if "test" not in carried else 0
    n_test = min(n_test, max(len(groups) - 1, 0))
    n_val = _group_count(val_fraction, len(groups)) if "val" not in carried else 0
    n_val = min(n_val, max(len(groups) - 1 - n_test, 0))
    carved = dict.fromkeys(groups[:n_test], "test") | dict.fromkeys(
        groups[n_test : n_test + n_val], "val"
    )

    def split_of(item: VideoItem) -> str:
        if item.split in ("val", "test"):
            return item.split
        return carved.get(item.group, "train")

    return [replace(item, split=split_of(item)) for item in items]
