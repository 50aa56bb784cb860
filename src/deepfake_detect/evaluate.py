"""Evaluate a model on labelled data: video and frame metrics, per manipulation method, plots.

DATA is either a stage-1 output folder, whose crops are scored straight from their npy files
(no decoding, no detection), or a raw labelled dataset read by a stage-1 adapter, whose videos
are judged exactly as `predict` judges them. Videos that cannot be scored stay in the table
with their status and are left out of the metrics.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from numpy.typing import ArrayLike
from rich.console import Console
from rich.progress import track
from rich.table import Table
from sklearn.metrics import roc_curve

from deepfake_detect.dataset_layouts import DatasetError, VideoItem, discover
from deepfake_detect.inference import Predictor
from deepfake_detect.metrics import (
    METRIC_NAMES,
    binary_metrics,
    bootstrap_auc_interval,
    brier_score,
    confusion,
    expected_calibration_error,
)
from deepfake_detect.scoring import read_tracks
from deepfake_detect.status import Status
from deepfake_detect.training_data import DataError, npy_problem, read_metadata

VIDEO_COLUMNS = [
    "video_id",
    "path",
    "label",
    "method",
    "split",
    "status",
    "error",
    "probability",
    "prediction",
    "verdict",
    "n_frames",
]
RANK_METRICS = ("auc", "eer", "ap", "tpr_at_fpr_1", "tpr_at_fpr_5")
PREPROCESSED = "preprocessed"

Tracker = Callable[[Iterable[Any], int], Iterator[Any]]


@dataclass
class EvaluationResult:
    """What `evaluate` wrote: the summary (evaluation.json) and the per-video table (videos.csv).

    Undefined metrics are NaN in `summary` and null in evaluation.json.
    """

    summary: dict[str, Any]
    videos: pd.DataFrame
    output_dir: Path


def evaluate(
    data: Path,
    predictor: Predictor,
    output_dir: Path,
    *,
    dataset_format: str = "auto",
    split: str | None = None,
    splits_dir: Path | None = None,
    allow_outside_root: bool = False,
    progress: bool = True,
    console: Console | None = None,
    pool: Any = None,
) -> EvaluationResult:
    """Score every video of DATA, compute the metrics and write the summary, table and plots.

    Args:
        data: a stage-1 output folder (has metadata.csv), or a labelled dataset for
            `datasets.discover`.
        predictor: the loaded model; its aggregation rule and threshold are used.
        output_dir: receives evaluation.json, videos.csv, roc.png and scores.png.
        dataset_format: auto (a preprocessed folder first, then the adapters' detection), or
            an adapter name to read DATA as a raw dataset.
        split: only the videos of this split (train, val or test).
        splits_dir: FF++'s official split files (raw ffpp datasets only).
        allow_outside_root: read the files a CSV dataset lists outside its own folder.
        progress: show a progress bar and print the metrics table.
        console: where progress and tables go (default: stderr).
        pool: what scores the videos, with the batch methods of a Predictor (`predict_all`,
            `probabilities_all`), e.g. `ray_executor.RayPredictors`; default `predictor`.

    Raises:
        DataError: a preprocessed folder that cannot be read, or no video of `split`.
        DatasetError: DATA is neither a preprocessed folder nor a readable dataset.
    """
    data, output_dir = Path(data), Path(output_dir)
    console = console or Console(stderr=True)

    def tracker(items: Iterable[Any], total: int) -> Iterator[Any]:
        return track(items, "evaluating", total=total, console=console, disable=not progress)

    if dataset_format == "auto" and (data / "metadata.csv").is_file():
        source = PREPROCESSED
        videos, frames = _score_preprocessed(data, predictor, split, tracker, pool or predictor)
    else:
        source, items = _discover(data, dataset_format, splits_dir, allow_outside_root)
        table = _select_split(_items_table(items), split, data)
        videos, frames = _score_raw(table, tracker, pool or predictor)
    scored = videos.probability.notna()
    videos["prediction"] = (videos.probability >= predictor.threshold).astype("Int64")
    videos.loc[~scored, "prediction"] = pd.NA
    videos["verdict"] = [
        predictor.verdict(p) if ok else "" for p, ok in zip(videos.probability, scored, strict=True)
    ]
    videos = videos.reindex(columns=VIDEO_COLUMNS)
    header = {
        "data": str(data),
        "source": source,
        "split": split,
        "model": str(predictor.model_path),
        "aggregation": predictor.aggregation,
    }
    summary = header | summarise(videos, frames, predictor.threshold, predictor.uncertain_band)
    _write_outputs(output_dir, summary, videos)
    if progress:
        for part in console_report(summary):
            console.print(part, highlight=False)
        console.print(f"written to {output_dir}", highlight=False)
    return EvaluationResult(summary, videos, output_dir)


# --- reading and scoring ---------------------------------------------------------------------


def _discover(
    data: Path, dataset_format: str, splits_dir: Path | None, allow_outside_root: bool
) -> tuple[str, list[VideoItem]]:
    try:
        return discover(data, dataset_format, splits_dir, allow_outside_root)
    except DatasetError as error:
        if dataset_format != "auto":
            raise
        raise DatasetError(
            f"{data}: not a preprocessed folder (no metadata.csv) nor a dataset: {error}"
        ) from None


def _items_table(items: list[VideoItem]) -> pd.DataFrame:
    """A raw dataset's videos as rows like metadata.csv's (missing files and refused rows get
    their status)."""
    rows = []
    for item in items:
        status, error = item.unavailable() or (Status.OK, "")
        rows.append(
            {
                "video_id": item.video_id,
                "path": str(item.path),
                "label": item.label,
                "method": item.method,
                "split": item.split or "",
                "status": status,
                "error": error,
            }
        )
    return pd.DataFrame(rows)


def _select_split(table: pd.DataFrame, split: str | None, data: Path) -> pd.DataFrame:
    if split is None:
        return table.reset_index(drop=True)
    rows = table[table.split == split]
    if rows.empty:
        found = ", ".join(sorted(map(str, set(table.split) - {""}))) or "none"
        raise DataError(f"{data}: no videos of split {split!r} (splits found: {found})")
    return rows.reset_index(drop=True)


def _score_raw(
    table: pd.DataFrame, tracker: Tracker, pool: Any
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Judge each video with `pool.predict_all`; return the video and frame tables."""
    videos = table.assign(probability=math.nan, n_frames=0)
    frames = {}
    todo = [index for index, video in videos.iterrows() if video.status == Status.OK]
    paths = [Path(videos.path[index]) for index in todo]
    for position, prediction in tracker(pool.predict_all(paths), len(todo)):
        index = todo[position]
        probabilities = [frame.probability for frame in prediction.frames]
        videos.loc[index, ["status", "error", "n_frames"]] = [
            prediction.status,
            prediction.error,
            len(probabilities),
        ]
        if prediction.scored:
            videos.loc[index, "probability"] = prediction.probability
            frames[index] = _frames(videos.loc[index], probabilities)
    return videos, _concat([frames[index] for index in sorted(frames)])


def _score_preprocessed(
    data: Path, predictor: Predictor, split: str | None, tracker: Tracker, pool: Any
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score each ok video's crops from its npy under the predictor's rule; persons and frames
    as crops.csv says."""
    table, root = read_metadata(data)
    table = _select_split(table, split, data)
    videos = table.reindex(
        columns=["video_id", "path", "label", "method", "split", "status", "error"], fill_value=""
    )
    tracks = read_tracks(root / "crops.csv")
    videos = videos.assign(probability=math.nan, n_frames=0)
    todo = []
    for index, video in table.iterrows():
        if video.status != Status.OK:
            continue
        problem, _ = npy_problem(root / video.npy_path, int(video.n_crops))
        if problem:
            videos.loc[index, ["status", "error"]] = [Status.NPY_ERROR, problem]
        else:
            todo.append(index)
    frames = {}
    paths = [root / table.npy_path[index] for index in todo]
    for position, probabilities in tracker(pool.probabilities_all(paths), len(todo)):
        index = todo[position]
        video = table.loc[index]
        if not isinstance(probabilities, np.ndarray):  # its worker died on every try
            message = f"{paths[position]}: the worker scoring it died ({probabilities.message})"
            videos.loc[index, ["status", "error"]] = [Status.WORKER_CRASH, message]
            continue
        face, frame = tracks.of(video.video_id, len(probabilities))
        judgement = predictor.judge(video.video_id, face, probabilities, frame)
        videos.loc[index, ["status", "error", "n_frames"]] = [
            judgement.status,
            judgement.error,
            len(probabilities),
        ]
        if judgement.probability is not None:
            videos.loc[index, "probability"] = judgement.probability
            frames[index] = _frames(video, probabilities, face)
    return videos, _concat([frames[index] for index in sorted(frames)])


def _frames(video: pd.Series, probabilities: ArrayLike, face: ArrayLike = 0) -> pd.DataFrame:
    """One video's scored crops as rows of the frame table (face: its track, per crop)."""
    return pd.DataFrame(
        {
            "video_id": video.video_id,
            "face": face,
            "label": int(video.label),
            "probability": np.asarray(probabilities, np.float64),
        }
    )


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    columns = ["video_id", "face", "label", "probability"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


# --- metrics ---------------------------------------------------------------------------------


def summarise(
    videos: pd.DataFrame,
    frames: pd.DataFrame,
    threshold: float,
    uncertain_band: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Counts, unscored videos by status, frame and video metrics, video metrics per method,
    and the share of scored videos called UNCERTAIN with the accuracy on the rest.

    Each method's fakes are measured against all real videos. Metrics that need both classes
    are NaN when one is absent, and `notes` says why.
    """
    scored = videos[videos.probability.notna()]
    unscored = videos.status[videos.probability.isna()].value_counts()
    counts = {
        "videos": len(videos),
        "scored": len(scored),
        "real": int((scored.label == 0).sum()),
        "fake": int((scored.label == 1).sum()),
        "frames": len(frames),
    }
    return {
        "threshold": threshold,
        "counts": counts,
        "n_unscored": {str(status): int(n) for status, n in unscored.items()},
        "video": _video_metrics(scored, threshold),
        "frame": binary_metrics(frames.label.astype(int), frames.probability, threshold),
        "per_method": {
            method: _video_metrics(subset, threshold)
            for method, subset in method_subsets(scored).items()
        },
        "uncertain": _uncertain(scored, threshold, uncertain_band),
        "notes": _notes(counts),
    }


def _uncertain(
    scored: pd.DataFrame, threshold: float, band: tuple[float, float] | None
) -> dict[str, Any]:
    """How many scored videos fall in the uncertain band, and how right the others' calls are
    (NaN when none is left)."""
    p, labels = scored.probability.to_numpy(float), scored.label.to_numpy(int)
    inside = np.zeros(len(p), bool) if band is None else (p > band[0]) & (p < band[1])
    rest = ~inside
    right = (p[rest] >= threshold).astype(int) == labels[rest]
    return {
        "band": None if band is None else list(band),
        "n": int(inside.sum()),
        "share": float(inside.mean()) if len(p) else math.nan,
        "accuracy_on_rest": float(right.mean()) if rest.any() else math.nan,
        "n_rest": int(rest.sum()),
    }


def _video_metrics(videos: pd.DataFrame, threshold: float) -> dict[str, Any]:
    """Video metrics, with the AUC's bootstrap 95% interval (`auc_interval`), the expected
    calibration error over 10 bins (`ece`) and the Brier score."""
    labels, probabilities = videos.label.astype(int), videos.probability
    return binary_metrics(labels, probabilities, threshold) | {
        "auc_interval": list(bootstrap_auc_interval(labels, probabilities)),
        "ece": expected_calibration_error(labels, probabilities),
        "brier": brier_score(labels, probabilities),
        "confusion": confusion(labels, probabilities, threshold),
        "n_real": int((labels == 0).sum()),
        "n_fake": int((labels == 1).sum()),
    }


def method_subsets(videos: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """For each manipulation method named among the fakes: its fakes plus every real video."""
    fakes = videos[videos.label == 1]
    methods = sorted({str(m) for m in fakes.method.fillna("") if str(m)})
    return {m: videos[(videos.label == 0) | (videos.method == m)] for m in methods}


def _notes(counts: dict[str, int]) -> list[str]:
    if counts["scored"] == 0:
        return ["no video could be scored: every metric is undefined"]
    if counts["real"] and counts["fake"]:
        return []
    present = "real" if counts["real"] else "fake"
    return [
        f"only {present} videos were scored: {', '.join(RANK_METRICS)} need both classes "
        "and are undefined"
    ]


# --- outputs ---------------------------------------------------------------------------------


def _write_outputs(output_dir: Path, summary: dict[str, Any], videos: pd.DataFrame) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_without_nan(summary), indent=2, allow_nan=False)
    (output_dir / "evaluation.json").write_text(text + "\n", encoding="utf-8")
    videos.to_csv(output_dir / "videos.csv", index=False)
    scored = videos[videos.probability.notna()]
    plot_roc(scored, summary).savefig(output_dir / "roc.png", dpi=100)
    plot_scores(scored, summary["threshold"]).savefig(output_dir / "scores.png", dpi=100)


def _without_nan(value: Any) -> Any:
    """NaN becomes None (JSON null), in nested dicts and lists."""
    if isinstance(value, dict):
        return {key: _without_nan(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_nan(item) for item in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def plot_roc(scored: pd.DataFrame, summary: dict[str, Any]) -> Figure:
    """Video-level ROC of all videos and of each method, with the AUCs in the legend."""
    figure = Figure(figsize=(5.5, 5), layout="constrained")
    axes = figure.subplots()
    curves = {"all videos": (scored, summary["video"]["auc"])} | {
        method: (subset, summary["per_method"][method]["auc"])
        for method, subset in method_subsets(scored).items()
    }
    for name, (videos, auc) in curves.items():
        if not math.isnan(auc):
            fpr, tpr, _ = roc_curve(videos.label.astype(int), videos.probability)
            axes.plot(
                fpr,
                tpr,
                linewidth=2 if name == "all videos" else 1,
                label=f"{name} (AUC {auc:.3f})",
            )
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="lower right", fontsize="small")
    else:
        axes.text(0.5, 0.5, "ROC needs real and fake videos", ha="center", va="center")
    axes.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        xlim=(0, 1),
        ylim=(0, 1.01),
        title="ROC, video level",
    )
    return figure


def plot_scores(scored: pd.DataFrame, threshold: float) -> Figure:
    """Histogram of video probabilities, real against fake, with the decision threshold."""
    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.subplots()
    bins = np.linspace(0, 1, 21)
    for label, name, colour in ((0, "real", "tab:green"), (1, "fake", "tab:red")):
        values = scored.probability[scored.label == label]
        axes.hist(values, bins=bins, alpha=0.6, color=colour, label=f"{name} ({len(values)})")
    axes.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    axes.set(xlabel="P(fake) per video", ylabel="videos", xlim=(0, 1), title="video scores")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.legend(fontsize="small")
    return figure


def console_report(summary: dict[str, Any]) -> list[Table | str]:
    """The console view: main metrics at video and frame level, counts, one line per method."""
    counts, video = summary["counts"], summary["video"]
    main = Table(title="evaluation")
    for column in ("metric", "video", "frame"):
        main.add_column(column, justify="left" if column == "metric" else "right")
    for name in METRIC_NAMES:
        main.add_row(name, _cell(video[name]), _cell(summary["frame"][name]))
    low, high = video["auc_interval"]
    main.add_row("auc 95% interval", f"{_cell(low)}-{_cell(high)}", "")
    main.add_row("ece (10 bins)", _cell(video["ece"]), "")
    main.add_row("brier", _cell(video["brier"]), "")
    unscored = ", ".join(f"{status} {n}" for status, n in summary["n_unscored"].items())
    cells = " ".join(f"{name} {n}" for name, n in video["confusion"].items())
    lines = [
        f"{counts['scored']} of {counts['videos']} videos scored ({counts['real']} real, "
        f"{counts['fake']} fake){'; not scored: ' + unscored if unscored else ''}",
        f"threshold {summary['threshold']:.3f}: {cells}",
        _uncertain_line(summary),
        *summary["notes"],
    ]
    if not summary["per_method"]:
        return [main, *lines]
    methods = Table(title="per method (its fakes against all real videos)")
    for column in ("method", "fakes", "auc", "ap", "eer", "accuracy"):
        methods.add_column(column, justify="left" if column == "method" else "right")
    for method, metrics in summary["per_method"].items():
        methods.add_row(
            method,
            str(metrics["n_fake"]),
            *(_cell(metrics[k]) for k in ("auc", "ap", "eer", "accuracy")),
        )
    return [main, *lines, methods]


def _uncertain_line(summary: dict[str, Any]) -> str:
    uncertain = summary["uncertain"]
    if uncertain["band"] is None:
        return "no uncertain band: every scored video called REAL or FAKE"
    low, high = uncertain["band"]
    return (
        f"UNCERTAIN (P(fake) in {low:.3f}-{high:.3f}): {uncertain['n']} videos "
        f"({_cell(uncertain['share'] * 100)}%); accuracy on the other "
        f"{uncertain['n_rest']}: {_cell(uncertain['accuracy_on_rest'])}"
    )


def _cell(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"
