"""Stage 1: dataset folders in, face crops (.npy), metadata.csv and crops.csv out.

`process_video` is a pure function of one video and the parameters (it writes only that
video's own .npy); `VideoDataProcessor` is the executor that owns discovery, splits, the
worker pool, the progress journal that makes a killed run resumable, and the merged tables.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, fields
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from deepfake_detect import __version__
from deepfake_detect.crops import (
    LANDMARK_COLUMNS,
    STAGE1_SETTINGS,
    CropConfig,
    check_detector,
    extract_faces,
)
from deepfake_detect.dataset_layouts import VideoItem, assign_splits, discover
from deepfake_detect.errors import DeepfakeDetectError
from deepfake_detect.extras import require_extra
from deepfake_detect.files import atomic_path
from deepfake_detect.status import Status
from deepfake_detect.video import MAX_PIXELS, VideoError

FORMAT_VERSION = 1
EXECUTORS = ("local", "ray")
JOURNAL = "progress.jsonl"
# Statuses that may change by themselves (the file appears, is made readable): retried on resume.
RETRY_ON_RESUME = frozenset(
    {Status.MISSING, Status.READ_ERROR, Status.WORKER_CRASH, Status.OUTSIDE_ROOT}
)
METADATA_COLUMNS = [
    "video_id", "path", "dataset", "label", "group", "split", "method", "npy_path",
    "n_frames_saved", "n_crops", "n_faces", "fps", "width", "height", "duration",
    "n_frames", "rotation", "status", "error",
]  # fmt: skip
CROP_COLUMNS = [
    "video_id", "crop_index", "frame_index", "timestamp", "face_index",
    "x0", "y0", "x1", "y1", "score", *LANDMARK_COLUMNS,
]  # fmt: skip


class PreprocessError(DeepfakeDetectError, ValueError):
    """A run that cannot start (bad parameters, a resume that would mix settings)."""


@dataclass
class ProcessedVideo:
    """What processing one video produced: its metadata fields and one record per crop."""

    video_id: str
    fields: dict[str, Any]
    crops: list[dict[str, Any]] = field(default_factory=list)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


def process_video(
    item: VideoItem,
    config: CropConfig,
    faces_dir: Path,
    threads: int = 0,
    max_pixels: int = MAX_PIXELS,
) -> ProcessedVideo:
    """Crop one video's faces and save them as one .npy; return its metadata and crop records.

    `threads` decode the video (0: one per core); videos with frames over `max_pixels` are
    refused. Never raises for a bad video: the failure becomes the result's status and error.
    """
    if (refusal := item.unavailable()) is not None:
        return _failure(item, *refusal)
    try:
        faces = extract_faces(item.path, config, threads, max_pixels=max_pixels)
    except VideoError as error:
        return _failure(item, error.status, str(error))
    except Exception as error:  # one broken video must never stop a run of thousands
        return _failure(item, Status.ERROR, f"{item.path}: {type(error).__name__}: {error}")
    npy_name = f"{item.video_id}.npy"
    _save_npy(faces_dir / npy_name, faces.crops)
    video_fields = faces.info.table_fields() | {
        "npy_path": f"{faces_dir.name}/{npy_name}",
        "n_frames_saved": faces.n_frames_with_faces,
        "n_crops": len(faces.crops),
        "n_faces": faces.n_faces,
        "status": Status.OK,
        "error": "",
    }
    records = [{"video_id": item.video_id} | record for record in faces.records]
    return ProcessedVideo(item.video_id, video_fields, records)


def _one_core_per_worker(parent_pid: int | None = None) -> None:
    """Pool initializer: a worker is one core's worth of work (its decoder gets one thread,
    OpenCV too), so N workers use N cores instead of each spreading over all of them. It also
    ends with its parent (`exit_with_parent`)."""
    import cv2

    cv2.setNumThreads(1)
    if parent_pid is not None:
        exit_with_parent(parent_pid)


PR_SET_PDEATHSIG = 1


def exit_with_parent(parent_pid: int) -> None:
    """Make this process die when `parent_pid` does, even by kill -9 (which runs no cleanup):
    a pool worker otherwise waits forever on its task queue, and with it the resource tracker.

    Linux delivers SIGKILL through PR_SET_PDEATHSIG; elsewhere a daemon thread checks the
    parent's id every second. A parent already gone by now is caught by the id check."""
    import ctypes
    import signal
    import sys
    import threading

    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    else:

        def watch() -> None:
            while os.getppid() == parent_pid:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
    if os.getppid() != parent_pid:
        os._exit(1)


def process_video_on_ray(
    item: VideoItem, config: CropConfig, faces_dir: Path, max_pixels: int, cwd: str
) -> ProcessedVideo:
    """`process_video` as a Ray task runs it: on one core, as a pool worker does (so the
    crops are the same bytes), with relative paths read from the driver's working folder
    where that folder exists (a shared filesystem)."""
    _one_core_per_worker()
    if os.path.isdir(cwd):
        os.chdir(cwd)
    return process_video(item, config, faces_dir, threads=1, max_pixels=max_pixels)


def _failure(item: VideoItem, status: str, message: str) -> ProcessedVideo:
    return ProcessedVideo(
        item.video_id, {"status": status, "error": message, "n_frames_saved": 0, "n_crops": 0}
    )


def _versions() -> dict[str, str]:
    import av
    import cv2
    import dlib

    return {
        "deepfake_detect": __version__,
        "av": av.__version__,
        "opencv": cv2.__version__,
        "dlib": dlib.__version__,
        "numpy": np.__version__,
    }


def _write_csv_atomic(path: Path, table: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


class Journal:
    """Append-only record of finished videos (one JSON line each), fsynced per line.

    A kill can at worst cut the last line short. `read` counts the lines it cannot use
    (`unreadable`), so that video is redone; `open_for_append` cuts such a torn tail off, so
    the next record starts on a line of its own instead of being glued to the fragment.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.unreadable = 0

    def read(self) -> dict[str, ProcessedVideo]:
        results: dict[str, ProcessedVideo] = {}
        self.unreadable = 0
        if not self.path.exists():
            return results
        with open(self.path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                    result = ProcessedVideo(record["video_id"], record["fields"], record["crops"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    self.unreadable += line.strip() != ""
                    continue
                results[result.video_id] = result
        return results

    def open_for_append(self) -> None:
        """Cut off a torn last line (one without its newline) before anything is appended."""
        if not self.path.exists():
            return
        with open(self.path, "rb+") as handle:
            data = handle.read()
            if data and not data.endswith(b"\n"):
                handle.truncate(data.rfind(b"\n") + 1)
                handle.flush()
                os.fsync(handle.fileno())

    def append(self, result: ProcessedVideo) -> None:
        line = json.dumps(asdict(result), allow_nan=True) + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())


class VideoDataProcessor:
    """Preprocess one or more dataset folders into face crops, resumably and in parallel.

    Args:
        dataset_dirs: dataset roots (or a CSV file for the csv format).
        output_dir: where preprocess.json, faces/, metadata.csv and crops.csv go.
        dataset_format: auto|folders|ffpp|celebdf|dfdc|csv.
        resume: skip videos a previous run finished; refuse if its crop parameters differ.
        crops: the crop settings (what `CropConfig` holds); or give its fields by keyword
            (`frames_per_video=16, use_face_detection=False, ...`) through `crop_settings`.
        num_workers: processes, each decoding on one thread (one core each); 0 runs in this
            process with a decoder thread per core. With Ray, the CPUs of the local instance.
        executor: local (a process pool) or ray (Ray tasks; needs the [ray] extra).
        ray_address: the Ray cluster to use (auto, ray://host:port); default a local
            instance. The output folder must be on a filesystem every node sees.
        max_pixels: videos whose frames have more pixels are refused (decode_error) before
            a frame is decoded; the default is 8K UHD.
        limit: process only the first N videos (by video id).
        val_fraction, test_fraction, seed: the group split used where a dataset has none.
        splits_dir: FaceForensics++ official split JSON files.
        allow_outside_root: read the files a CSV dataset lists outside its own folder
            (otherwise those rows get the status outside_root).
        progress: show a progress bar and a summary table.
        crop_settings: `CropConfig` fields, when `crops` is not given.
    """

    def __init__(
        self,
        dataset_dirs: Sequence[Path | str],
        output_dir: Path | str,
        *,
        dataset_format: str = "auto",
        crops: CropConfig | None = None,
        resume: bool = True,
        num_workers: int | None = None,
        executor: str = "local",
        ray_address: str | None = None,
        max_pixels: int = MAX_PIXELS,
        limit: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        seed: int = 0,
        splits_dir: Path | str | None = None,
        allow_outside_root: bool = False,
        progress: bool = True,
        console: Console | None = None,
        **crop_settings: Any,
    ) -> None:
        if crops is not None and crop_settings:
            raise PreprocessError("give a CropConfig or its fields by keyword, not both")
        try:
            self.config = crops or CropConfig(**crop_settings)
        except (TypeError, ValueError) as error:
            raise PreprocessError(str(error)) from None
        if not dataset_dirs:
            raise PreprocessError("give at least one dataset folder")
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0 <= value < 1:
                raise PreprocessError(f"{name} must be in [0, 1), got {value}")
        if val_fraction + test_fraction >= 1:
            raise PreprocessError("val_fraction + test_fraction must be below 1")
        if limit is not None and limit < 1:
            raise PreprocessError(f"limit must be at least 1, got {limit}")
        if max_pixels < 1:
            raise PreprocessError(f"max_pixels must be at least 1, got {max_pixels}")
        if executor not in EXECUTORS:
            raise PreprocessError(f"unknown executor {executor!r}; known: {', '.join(EXECUTORS)}")
        if executor == "ray":
            require_extra("ray", "--executor ray")
        self.executor, self.ray_address = executor, ray_address
        self.max_pixels = max_pixels
        self.dataset_dirs = [Path(d) for d in dataset_dirs]
        self.output_dir = Path(output_dir)
        self.dataset_format = dataset_format
        self.resume = resume
        self.num_workers = os.cpu_count() or 1 if num_workers is None else max(0, num_workers)
        self.limit = limit
        self.val_fraction, self.test_fraction, self.seed = val_fraction, test_fraction, seed
        self.splits_dir = Path(splits_dir) if splits_dir else None
        self.allow_outside_root = allow_outside_root
        self.progress = progress
        self.console = console or Console(stderr=True)

    @property
    def faces_dir(self) -> Path:
        return self.output_dir / "faces"

    def discover(self) -> list[VideoItem]:
        """All videos of all dataset folders, with splits assigned; ids must not collide."""
        items: list[VideoItem] = []
        for root in self.dataset_dirs:
            used, found = discover(
                root, self.dataset_format, self.splits_dir, self.allow_outside_root
            )
            self._say(f"{root}: {used} layout, {len(found)} videos")
            items.extend(found)
        counts = Counter(item.video_id for item in items)
        clashes = [video_id for video_id, n in counts.items() if n > 1]
        if clashes:
            raise PreprocessError(
                f"video ids collide across dataset folders (same folder name?): {clashes[:3]}"
            )
        items.sort(key=lambda item: item.video_id)
        items = items[: self.limit] if self.limit else items
        return assign_splits(items, self.val_fraction, self.test_fraction, self.seed)

    def run(self) -> pd.DataFrame:
        """Process every video not finished yet; write and return metadata.csv as a table."""
        items = self.discover()
        check_detector(self.config)
        self._prepare_output_dir()
        journal = Journal(self.output_dir / JOURNAL)
        done = self._finished(journal, items)
        journal.open_for_append()
        pending = [item for item in items if item.video_id not in done]
        if done or journal.unreadable:
            skipped = journal.unreadable
            note = f" ({skipped} unreadable journal lines skipped)" if skipped else ""
            self._say(f"resuming: {len(done)} videos already done, {len(pending)} to go{note}")
        results = dict(done)
        for result in self._execute(pending, len(items), len(done)):
            journal.append(result)
            results[result.video_id] = result
        metadata = self._write_tables(items, results)
        if self.progress:
            self.console.print(summary_table(metadata))
        return metadata

    def _say(self, message: str) -> None:
        if self.progress:
            self.console.print(message)

    def _prepare_output_dir(self) -> None:
        """Create the folders, start over or check resume compatibility, write preprocess.json."""
        try:
            self.faces_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise PreprocessError(
                f"{self.output_dir}: cannot create output folder ({error})"
            ) from None
        if not os.access(self.output_dir, os.W_OK):
            raise PreprocessError(f"{self.output_dir}: output folder is not writable")
        settings_path = self.output_dir / STAGE1_SETTINGS
        wanted = asdict(self.config)
        if settings_path.exists() and self.resume:
            previous = json.loads(settings_path.read_text(encoding="utf-8")).get("parameters", {})
            previous = asdict(CropConfig()) | previous  # a parameter added since has its default
            changed = {k: (previous.get(k), v) for k, v in wanted.items() if previous.get(k) != v}
            if changed:
                diff = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
                raise PreprocessError(
                    f"{self.output_dir} was made with other crop parameters ({diff}); "
                    "use the same parameters, another --output-dir, or --no-resume"
                )
        elif not self.resume:
            self._clear_previous_outputs()
        settings = {
            "format_version": FORMAT_VERSION,
            "parameters": wanted,
            "datasets": [str(d) for d in self.dataset_dirs],
            "dataset_format": self.dataset_format,
            "splits": {
                "val_fraction": self.val_fraction,
                "test_fraction": self.test_fraction,
                "seed": self.seed,
            },
            "versions": _versions(),
        }
        with atomic_path(settings_path) as tmp:
            tmp.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")

    def _clear_previous_outputs(self) -> None:
        """--no-resume: remove what an earlier run wrote (only files this stage writes)."""
        for npy in self.faces_dir.glob("*.npy"):
            npy.unlink()
        for name in (JOURNAL, "metadata.csv", "crops.csv"):
            (self.output_dir / name).unlink(missing_ok=True)

    def _finished(self, journal: Journal, items: list[VideoItem]) -> dict[str, ProcessedVideo]:
        """Results from earlier runs that still hold: the video is still wanted, its status is
        final, and an ok video's .npy is on disk."""
        if not self.resume:
            return {}
        wanted = {item.video_id for item in items}
        finished = {}
        for video_id, result in journal.read().items():
            status = result.fields.get("status")
            has_npy = status != Status.OK or (self.output_dir / result.fields["npy_path"]).exists()
            if video_id in wanted and status not in RETRY_ON_RESUME and has_npy:
                finished[video_id] = result
        return finished

    def _execute(self, items: list[VideoItem], total: int, done: int) -> Iterator[ProcessedVideo]:
        """Run `process_video` over the items with a progress bar; yield results as they come."""
        columns = (
            TextColumn("[bold]preprocess"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("videos  {task.fields[crops]} crops  {task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
        )
        start, crops = time.monotonic(), 0
        with Progress(*columns, console=self.console, disable=not self.progress) as bar:
            task = bar.add_task("", total=total, completed=done, crops=0, rate="")
            for count, result in enumerate(self._results(items), start=1):
                crops += result.fields.get("n_crops", 0)
                rate = count / max(time.monotonic() - start, 1e-9)
                bar.update(task, advance=1, crops=crops, rate=f"{rate:.2f} videos/s")
                if result.fields["status"] != Status.OK and self.progress:
                    bar.console.print(
                        f"[yellow]{result.fields['status']}[/]: {result.fields['error']}"
                    )
                yield result

    def _results(self, items: list[VideoItem]) -> Iterator[ProcessedVideo]:
        if self.executor == "ray":
            yield from self._ray_results(items)
            return
        if self.num_workers == 0:
            for item in items:
                yield process_video(item, self.config, self.faces_dir, max_pixels=self.max_pixels)
            return
        yield from self._pool_results(items)

    def _pool_results(self, items: list[VideoItem]) -> Iterator[ProcessedVideo]:
        """A process pool fed a few items at a time. When a worker dies (a decoder crash), the
        videos it may have been working on are retried one at a time in a fresh pool, so the
        one that kills a worker alone is recorded as worker_crash and the others finish."""
        queue, suspects = list(reversed(items)), []
        while queue or suspects:
            alone = bool(suspects)
            batch = [suspects.pop()] if alone else queue
            running: dict[Future, VideoItem] = {}
            try:
                with ProcessPoolExecutor(
                    self.num_workers,
                    mp_context=get_context("spawn"),
                    initializer=_one_core_per_worker,
                    initargs=(os.getpid(),),
                ) as pool:
                    while batch or running:
                        while batch and len(running) < 2 * self.num_workers:
                            job = pool.submit(
                                process_video,
                                batch[-1],
                                self.config,
                                self.faces_dir,
                                threads=1,
                                max_pixels=self.max_pixels,
                            )
                            running[job] = batch.pop()
                        finished, _ = wait(running, return_when=FIRST_COMPLETED)
                        for future in finished:
                            result = future.result()
                            del running[future]
                            yield result
            except BrokenProcessPool:
                if not alone:
                    suspects.extend(running.values())
                    continue
                (item,) = running.values()
                yield _failure(
                    item, Status.WORKER_CRASH, f"{item.path}: the worker decoding it died"
                )

    def _ray_results(self, items: list[VideoItem]) -> Iterator[ProcessedVideo]:
        """Ray tasks, a bounded number in flight; a video whose worker died on both tries is
        a worker_crash, as in the pool. Results come back here: only the driver writes."""
        from deepfake_detect.ray_executor import WorkerCrash, connect, map_tasks

        ray = connect(self.ray_address, num_cpus=self.num_workers or None)
        tasks = map_tasks(
            ray,
            process_video_on_ray,
            items,
            self.config,
            self.faces_dir,
            self.max_pixels,
            os.getcwd(),
        )
        for item, result in tasks:
            if isinstance(result, WorkerCrash):
                message = f"{item.path}: the worker decoding it died"
                result = _failure(item, Status.WORKER_CRASH, message)
            yield result

    def _write_tables(
        self, items: list[VideoItem], results: dict[str, ProcessedVideo]
    ) -> pd.DataFrame:
        """metadata.csv (one row per input video) and crops.csv (one row per saved crop)."""
        rows = []
        for item in items:
            row = {f.name: getattr(item, f.name) for f in fields(item) if f.name != "missing"}
            rows.append(row | {"path": str(item.path)} | results[item.video_id].fields)
        metadata = pd.DataFrame(rows).reindex(columns=METADATA_COLUMNS)
        crops = pd.DataFrame(
            [crop for item in items for crop in results[item.video_id].crops], columns=CROP_COLUMNS
        )
        _write_csv_atomic(self.output_dir / "metadata.csv", metadata)
        _write_csv_atomic(self.output_dir / "crops.csv", crops)
        return metadata


def summary_table(metadata: pd.DataFrame) -> Table:
    """Per label: videos, videos ok, failures by reason, crops saved."""
    table = Table(title="preprocess summary")
    for column in ("label", "videos", "ok", "failed (by reason)", "crops"):
        table.add_column(column, justify="left" if column.startswith("failed") else "right")
    for label, group in metadata.groupby("label", sort=True):
        reasons = group.loc[group.status != Status.OK, "status"].value_counts()
        failed = ", ".join(f"{reason}: {n}" for reason, n in reasons.items()) or "-"
        table.add_row(
            {0: "real", 1: "fake"}.get(int(label), str(label)),
            str(len(group)),
            str(int((group.status == Status.OK).sum())),
            failed,
            str(int(group.n_crops.fillna(0).sum())),
        )
    return table
