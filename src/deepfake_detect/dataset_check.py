"""`datasets check`: compare a download with the dataset's official contents, probe its videos,
and write or verify a manifest of every file's size and SHA-256.

The layout is recognised and read by the stage-1 adapters (dataset_layouts), so the check
sees exactly the videos preprocess would; each video is probed with video.probe, the same
opening stage 1 does.
"""

from __future__ import annotations

import csv
import os
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from rich.console import Console
from rich.markup import escape
from rich.progress import track
from rich.table import Table

from deepfake_detect.dataset_catalog import (
    CELEBDF_V2_COUNTS,
    CELEBDF_V2_TEST_VIDEOS,
    DFDC_PART_NAME,
    DFDC_PARTS,
    DFDC_TRAIN_VIDEOS,
    FFPP_DFD_COUNTS,
    FFPP_METHODS,
    FFPP_SPLIT_VIDEOS,
    FFPP_VIDEOS_PER_SOURCE,
)
from deepfake_detect.dataset_layouts import (
    CELEBDF_TEST_LIST,
    DatasetError,
    VideoItem,
    dfdc_parts,
    discover,
    find_videos,
    read_ffpp_splits,
)
from deepfake_detect.files import atomic_path, file_sha256
from deepfake_detect.video import VideoError, probe

MANIFEST_COLUMNS = ("path", "size", "sha256")
FFPP_SPLITS_FOLDER = "splits"

Tracker = Callable[[Iterable, str, int], Iterator]


@dataclass
class PartCheck:
    """One part of a dataset: an FF++ source and compression, a Celeb-DF folder, a DFDC part.

    Attributes:
        name: the part, as a folder relative to the dataset root.
        expected: its official number of videos; None where the dataset states none.
        found: its listed videos that are on disk.
        missing: videos the dataset lists (metadata.json, a test list) that are not on disk.
        unlisted: videos on disk that no list of the dataset names (so they have no label).
        unreadable: probed videos with no decodable video stream, each "path: reason".
        probed: how many of its videos were probed.
    """

    name: str
    expected: int | None
    found: int = 0
    missing: list[str] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    probed: int = 0

    @property
    def gaps(self) -> int:
        """Videos short of the official count (or listed and absent), unlisted and unreadable."""
        short = max(0, self.expected - self.found) if self.expected is not None else 0
        return max(short, len(self.missing)) + len(self.unlisted) + len(self.unreadable)


@dataclass
class ManifestCheck:
    """A dataset compared with a manifest: files absent, different, or not in the manifest."""

    manifest: str
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)

    @property
    def matches(self) -> bool:
        return not (self.missing or self.changed or self.added)


@dataclass
class DatasetCheck:
    """Everything `datasets check` found; `complete` decides its exit code (0, else 1)."""

    root: str
    format: str
    parts: list[PartCheck]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    videos: int = 0
    probed: int = 0
    manifest: ManifestCheck | None = None

    @property
    def complete(self) -> bool:
        manifest_ok = self.manifest is None or self.manifest.matches
        return manifest_ok and not self.problems and all(p.gaps == 0 for p in self.parts)


# --- the check -----------------------------------------------------------------------------------


def check_dataset(
    root: Path,
    dataset_format: str = "auto",
    sample: int | None = None,
    seed: int = 0,
    tracker: Tracker | None = None,
) -> DatasetCheck:
    """Count a dataset's videos per part against the official counts and probe them.

    Args:
        root: the dataset folder (or CSV file) as stage 1 reads it.
        dataset_format: auto (stage 1's detection) or an adapter name.
        sample: probe only this many videos, drawn at random (seeded); None probes all.
        seed: seed of the sample.
        tracker: wraps the probing loop (a progress bar); it gets the items, a label, a total.

    Raises:
        DatasetError: not a readable dataset of that format (one line naming the file).
    """
    root = Path(os.path.abspath(root))
    used, items = discover(root, dataset_format)
    parts: dict[str, PartCheck] = {}
    for item in items:
        part = _part(parts, _part_name(used, root, item))
        if item.missing:
            part.missing.append(_shown(root, item.path))
        else:
            part.found += 1
    check = DatasetCheck(str(root), used, parts=[], videos=sum(p.found for p in parts.values()))
    if used in OFFICIAL_CHECKS:
        OFFICIAL_CHECKS[used](root, items, parts, check)
    check.parts = sorted(parts.values(), key=lambda p: p.name)
    present = [item for item in items if not item.missing]
    if sample is not None and sample < len(present):
        present = random.Random(seed).sample(present, sample)
        check.notes.append(f"probed a random sample of {sample} of the {check.videos} videos")
    for item in tracker(present, "probing", len(present)) if tracker else present:
        part = parts[_part_name(used, root, item)]
        part.probed += 1
        try:
            probe(item.path, threads=1)
        except VideoError as error:
            part.unreadable.append(str(error))
    check.probed = len(present)
    return check


def _part_name(used: str, root: Path, item: VideoItem) -> str:
    """FF++: <sequences>/<source>/<compression>; Celeb-DF: its folder; DFDC: the part folder;
    real/fake folders and CSV lists: the label (and method)."""
    relative = PurePosixPath(Path(os.path.relpath(item.path, root)).as_posix())
    if used == "ffpp":
        return "/".join(relative.parts[:3])
    if used == "celebdf":
        return relative.parts[0]
    if used == "dfdc":
        return relative.parent.as_posix() if relative.parent.name else root.name
    label = ("real", "fake")[item.label]
    return f"{label}/{item.method}" if item.method else label


def _shown(root: Path, path: Path) -> str:
    """A path as the report shows it: relative to the dataset root when it lies inside."""
    relative = os.path.relpath(path, root)
    return path.as_posix() if relative.startswith("..") else PurePosixPath(relative).as_posix()


def _part(parts: dict[str, PartCheck], name: str, expected: int | None = None) -> PartCheck:
    """The named part (added empty when nothing of it is on disk), with its official count."""
    part = parts.setdefault(name, PartCheck(name, None))
    if expected is not None:
        part.expected = expected
    return part


def _check_ffpp(
    root: Path, items: list[VideoItem], parts: dict[str, PartCheck], check: DatasetCheck
) -> None:
    """Every compression present needs the 1,000 originals and 1,000 fakes of each method;
    the optional DeepFakeDetection parts are counted when present; splits/ when present."""
    sources = ["original_sequences/youtube", *(f"manipulated_sequences/{m}" for m in FFPP_METHODS)]
    for compression in sorted({name.rsplit("/", 1)[-1] for name in parts}):
        for source in sources:
            _part(parts, f"{source}/{compression}", FFPP_VIDEOS_PER_SOURCE)
    for name in list(parts):
        source = name.rsplit("/", 1)[0]
        if source in FFPP_DFD_COUNTS:
            _part(parts, name, FFPP_DFD_COUNTS[source])
    splits = root / FFPP_SPLITS_FOLDER
    if not splits.is_dir():
        check.notes.append(
            f"no {FFPP_SPLITS_FOLDER}/ folder: the official train/val/test.json (from "
            "github.com/ondyari/FaceForensics) were not checked"
        )
        return
    try:
        split_of = read_ffpp_splits(splits)
    except DatasetError as error:
        check.problems.append(str(error))
        return
    for split, expected in FFPP_SPLIT_VIDEOS.items():
        count = sum(1 for value in split_of.values() if value == split)
        if count != expected:
            check.problems.append(
                f"{splits / split}.json: {count} video ids; the official split has {expected}"
            )


def _check_celebdf(
    root: Path, items: list[VideoItem], parts: dict[str, PartCheck], check: DatasetCheck
) -> None:
    """Celeb-DF v2's three folders and its 518-video test list."""
    for name, expected in CELEBDF_V2_COUNTS.items():
        _part(parts, name, expected)
    test_list = root / CELEBDF_TEST_LIST
    if not test_list.is_file():
        check.problems.append(f"{test_list}: the official test list is missing")
        return
    listed = sum(1 for item in items if item.split == "test")
    if listed != CELEBDF_V2_TEST_VIDEOS:
        check.problems.append(
            f"{test_list}: {listed} videos listed; Celeb-DF v2's list has {CELEBDF_V2_TEST_VIDEOS}"
        )


def _check_dfdc(
    root: Path, items: list[VideoItem], parts: dict[str, PartCheck], check: DatasetCheck
) -> None:
    """Each part against its own metadata.json, and the 50 parts against 119,154 videos."""
    listed = {item.path for item in items}
    folders = dfdc_parts(root)
    for folder in folders:
        part = _part(parts, folder.name)
        part.expected = part.found + len(part.missing)
        part.unlisted = [_shown(root, p) for p in find_videos(folder) if p not in listed]
    if folders == [root]:
        return  # one part on its own: the others are not expected here
    absent = [DFDC_PART_NAME.format(i) for i in range(DFDC_PARTS)]
    absent = [name for name in absent if name not in parts]
    if absent:
        shown = ", ".join(absent[:5]) + (f" and {len(absent) - 5} more" if len(absent) > 5 else "")
        check.problems.append(f"{len(absent)} of the {DFDC_PARTS} training parts absent: {shown}")
    elif len(items) != DFDC_TRAIN_VIDEOS:
        check.problems.append(
            f"the parts' metadata.json files list {len(items):,} videos; DFDC's training set "
            f"has {DFDC_TRAIN_VIDEOS:,}"
        )


OfficialCheck = Callable[[Path, list[VideoItem], dict[str, PartCheck], DatasetCheck], None]
OFFICIAL_CHECKS: dict[str, OfficialCheck] = {
    "ffpp": _check_ffpp,
    "celebdf": _check_celebdf,
    "dfdc": _check_dfdc,
}


# --- manifest ------------------------------------------------------------------------------------


def _files(root: Path, leave_out: set[Path]) -> list[Path]:
    """Every regular file under root, sorted, except those left out (the manifest itself)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.resolve() not in leave_out)


def write_manifest(root: Path, manifest: Path, tracker: Tracker | None = None) -> int:
    """Write path (relative, posix), size and SHA-256 of every file under root as CSV.

    Returns how many files it lists. The manifest itself is left out when it lies inside root.
    """
    root = Path(os.path.abspath(root))
    if not root.is_dir():
        raise DatasetError(f"{root}: a manifest needs a dataset folder")
    files = _files(root, {Path(manifest).resolve()})
    loop = tracker(files, "hashing", len(files)) if tracker else files
    with atomic_path(Path(manifest)) as tmp, open(tmp, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(MANIFEST_COLUMNS)
        for path in loop:
            relative = path.relative_to(root).as_posix()
            writer.writerow([relative, path.stat().st_size, file_sha256(path)])
    return len(files)


def _read_manifest(manifest: Path, root: Path) -> dict[str, tuple[int, str]]:
    """Relative path -> (size, sha256) from a manifest; any fault is one line naming it."""
    try:
        with open(manifest, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DatasetError(f"{manifest}: not a readable manifest ({error})") from None
    entries = {}
    for number, row in enumerate(rows, start=2):
        try:
            path, size, digest = (row[column] for column in MANIFEST_COLUMNS)
            size_bytes = int(size)
        except (KeyError, TypeError, ValueError):
            raise DatasetError(
                f"{manifest}: line {number}: expected {','.join(MANIFEST_COLUMNS)} columns "
                "with an integer size"
            ) from None
        inside = (root / path).resolve().is_relative_to(root.resolve())
        if PurePosixPath(path).is_absolute() or not inside:
            raise DatasetError(f"{manifest}: line {number}: {path!r} is not inside the dataset")
        entries[path] = (size_bytes, digest.lower())
    return entries


def verify_manifest(root: Path, manifest: Path, tracker: Tracker | None = None) -> ManifestCheck:
    """Compare every file under root with a manifest that `write_manifest` wrote elsewhere."""
    root = Path(os.path.abspath(root))
    entries = _read_manifest(Path(manifest), root)
    result = ManifestCheck(str(manifest), checked=len(entries))
    loop = tracker(entries.items(), "verifying", len(entries)) if tracker else entries.items()
    for relative, (size, digest) in loop:
        path = root / relative
        if not path.is_file():
            result.missing.append(relative)
        elif path.stat().st_size != size:
            result.changed.append(f"{relative}: {path.stat().st_size} bytes, manifest says {size}")
        elif file_sha256(path) != digest:
            result.changed.append(f"{relative}: SHA-256 differs from the manifest's")
    on_disk = _files(root, {Path(manifest).resolve()})
    result.added = [
        p.relative_to(root).as_posix()
        for p in on_disk
        if p.relative_to(root).as_posix() not in entries
    ]
    return result


# --- report --------------------------------------------------------------------------------------


def check_table(check: DatasetCheck) -> Table:
    """One row per part: official count, found, missing, unlisted, probed, unreadable, state."""
    table = Table(title=escape(f"{check.root} ({check.format} layout)"))
    table.add_column("part", no_wrap=True)
    for column in ("official", "found", "missing", "unlisted", "probed", "unreadable"):
        table.add_column(column, justify="right")
    table.add_column("status")
    for part in check.parts:
        status = "[green]complete[/]" if part.gaps == 0 else f"[yellow]{part.gaps:,} gaps[/]"
        if part.found == 0 and not part.missing:
            status = "[red]absent[/]"
        official = "-" if part.expected is None else f"{part.expected:,}"
        table.add_row(
            escape(part.name),
            official,
            f"{part.found:,}",
            str(len(part.missing)),
            str(len(part.unlisted)),
            str(part.probed),
            str(len(part.unreadable)),
            status,
        )
    return table


def check_findings(check: DatasetCheck, limit: int = 10) -> list[str]:
    """The findings behind the table, one per line, at most `limit` of each kind per part."""
    lines = [f"problem: {problem}" for problem in check.problems]
    for part in check.parts:
        for kind, found in (
            ("missing", part.missing),
            ("unlisted", part.unlisted),
            ("unreadable", part.unreadable),
        ):
            lines += [f"{kind}: {entry}" for entry in found[:limit]]
            if len(found) > limit:
                lines.append(f"{kind}: ... and {len(found) - limit} more in {part.name}")
    if check.manifest is not None:
        manifest = check.manifest
        for kind, found in (
            ("not on disk", manifest.missing),
            ("changed", manifest.changed),
            ("not in manifest", manifest.added),
        ):
            lines += [f"{kind}: {entry}" for entry in found[:limit]]
            if len(found) > limit:
                lines.append(f"{kind}: ... and {len(found) - limit} more")
    return lines + [f"note: {note}" for note in check.notes]


def check_summary(check: DatasetCheck) -> str:
    """The last line: complete or usable with gaps, with the counts that say so."""
    gaps = sum(part.gaps for part in check.parts) + len(check.problems)
    verified = ""
    if check.manifest is not None:
        state = "matches" if check.manifest.matches else "does not match"
        verified = f"; {state} the manifest ({check.manifest.checked} files)"
    verdict = "complete" if check.complete else f"usable with gaps ({gaps} found)"
    return f"{check.videos:,} videos, {check.probed:,} probed: {verdict}{verified}"


def progress_tracker(console: Console) -> Tracker:
    """A tracker that shows a progress bar on `console`."""

    def tracker(items: Iterable, label: str, total: int) -> Iterator:
        return track(items, label, total=total, console=console, transient=True)

    return tracker
