"""The `deepfake-detect` command: a thin typer layer over the stages' Python API."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from deepfake_detect import __version__
from deepfake_detect.dataset_layouts import ADAPTERS
from deepfake_detect.errors import DeepfakeDetectError
from deepfake_detect.faces import CROP_SHAPES, DETECTORS
from deepfake_detect.preprocess import VideoDataProcessor
from deepfake_detect.status import Status
from deepfake_detect.video import MAX_PIXELS

if TYPE_CHECKING:
    from deepfake_detect.inference import Predictor, VideoPrediction

console = Console(stderr=True)


class OneLineErrors(TyperGroup):
    """Runs a command and turns the failures it expects into one line, never a traceback: the
    project's own errors (exit 2, bad input or options) and the operating system's (exit 1, a
    file that could not be read or written)."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except DeepfakeDetectError as error:
            raise fail_usage(str(error)) from None
        except OSError as error:
            raise fail(os_problem(error), code=1) from None


app = typer.Typer(
    cls=OneLineErrors,
    help="Tell whether a video of a face is real or a deepfake.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

datasets_app = typer.Typer(
    help="The supported datasets, and whether a download of one is complete.",
    no_args_is_help=True,
)
app.add_typer(datasets_app, name="datasets")

DatasetFormat = StrEnum("DatasetFormat", {name: name for name in ["auto", *ADAPTERS]})
Detector = StrEnum("Detector", {name: name for name in DETECTORS})
CropShape = StrEnum("CropShape", {name: name for name in CROP_SHAPES})


def fail(message: str, code: int) -> typer.Exit:
    """Print one clear line and return the exit with `code`."""
    console.print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code=code)


def fail_usage(message: str) -> typer.Exit:
    """Print one clear line and return the exit for bad usage (code 2)."""
    return fail(message, code=2)


def os_problem(error: OSError) -> str:
    """`file: reason` for an operating-system error, in one line."""
    reason = error.strerror or " ".join(str(error).split())
    return f"{error.filename}: {reason}" if error.filename else reason


def version_callback(show: bool) -> None:
    if show:
        print(f"deepfake-detect {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True)
    ] = False,
) -> None:
    """Preprocess video datasets into face crops, train detectors, and judge videos."""


@app.command()
def preprocess(
    dataset_dirs: Annotated[
        list[Path], typer.Argument(help="Dataset folders (or a CSV file for --dataset-format csv).")
    ],
    output_dir: Annotated[Path, typer.Option(help="Where crops and tables are written.")],
    dataset_format: Annotated[
        DatasetFormat, typer.Option(help="Layout of the dataset folders; auto detects it.")
    ] = DatasetFormat.auto,
    resume: Annotated[
        bool, typer.Option(help="Skip videos a previous run finished; --no-resume starts over.")
    ] = True,
    use_face_detection: Annotated[
        bool,
        typer.Option(
            "--use-face-detection/--no-face-detection",
            help="Crop detected faces, or keep whole frames letterboxed.",
        ),
    ] = True,
    face_detector: Annotated[Detector, typer.Option(help="Face detector.")] = Detector.dlib,
    frame_sampling_rate: Annotated[
        int | None, typer.Option(min=1, help="Keep every Nth frame (instead of evenly spaced).")
    ] = None,
    frames_per_video: Annotated[
        int | None, typer.Option(min=1, help="N evenly spaced frames per video [default: 32].")
    ] = None,
    max_frames: Annotated[
        int | None, typer.Option(min=1, help="At most this many sampled frames per video.")
    ] = None,
    crop_size: Annotated[int, typer.Option(min=16, max=2048, help="Crop side in pixels.")] = 256,
    margin: Annotated[
        float, typer.Option(min=0.0, max=2.0, help="Margin on each side, fraction of the box.")
    ] = 0.3,
    crop_shape: Annotated[
        CropShape,
        typer.Option(help="square around the face, or its box stretched or padded to a square."),
    ] = CropShape.square,
    faces_per_frame: Annotated[
        int | None, typer.Option(min=1, help="Keep at most N faces per frame, largest first.")
    ] = None,
    detect_size: Annotated[
        int, typer.Option(min=64, help="Longer side of the frame copy the detector sees.")
    ] = 640,
    scan_every: Annotated[
        int,
        typer.Option(
            min=1, help="Scan whole frames every Nth sampled frame; follow known faces between."
        ),
    ] = 8,
    num_workers: Annotated[
        int | None, typer.Option(min=0, help="Worker processes [default: CPU count].")
    ] = None,
    max_pixels: Annotated[
        int, typer.Option(min=1, help="Refuse videos with larger frames (default: 8K UHD).")
    ] = MAX_PIXELS,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N videos.")] = None,
    val_fraction: Annotated[
        float, typer.Option(min=0.0, max=0.9, help="Share of groups for validation.")
    ] = 0.1,
    test_fraction: Annotated[
        float, typer.Option(min=0.0, max=0.9, help="Share of groups for test.")
    ] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed of the group split.")] = 0,
    splits: Annotated[
        Path | None, typer.Option(help="Folder with FF++'s train/val/test.json split files.")
    ] = None,
    allow_outside_root: Annotated[
        bool, typer.Option(help="Read files a CSV lists outside its folder (else refused).")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar or summary.")] = False,
) -> None:
    """Sample frames, detect and crop faces, save .npy crops plus metadata.csv and crops.csv."""
    processor = VideoDataProcessor(
        dataset_dirs,
        output_dir,
        dataset_format=dataset_format.value,
        resume=resume,
        use_face_detection=use_face_detection,
        face_detector=face_detector.value,
        frame_sampling_rate=frame_sampling_rate,
        frames_per_video=frames_per_video,
        max_frames=max_frames,
        crop_size=crop_size,
        margin=margin,
        crop_shape=crop_shape.value,
        faces_per_frame=faces_per_frame,
        detect_size=detect_size,
        scan_every=scan_every,
        num_workers=num_workers,
        max_pixels=max_pixels,
        limit=limit,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        splits_dir=splits,
        allow_outside_root=allow_outside_root,
        progress=not quiet,
        console=console,
    )
    metadata = processor.run()
    ok = int((metadata.status == Status.OK).sum())
    console.print(f"{ok}/{len(metadata)} videos ok; tables in {output_dir}", highlight=False)


@app.command()
def synth(
    output_dir: Annotated[Path, typer.Option(help="Gets real/, fake/ and manifest.csv.")],
    videos: Annotated[int, typer.Option(min=1, help="How many clips.")] = 40,
    seed: Annotated[int, typer.Option(help="Same seed, same clips.")] = 0,
    faces: Annotated[
        list[Path] | None,
        typer.Option(help="Your own photos or videos, as more identities (repeatable)."),
    ] = None,
    size: Annotated[int, typer.Option(min=64, help="Clip width and height (even).")] = 256,
    fps: Annotated[float, typer.Option(min=1.0)] = 25.0,
    seconds: Annotated[float, typer.Option(min=0.1)] = 2.0,
    fake_fraction: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.5,
    corpus: Annotated[
        bool,
        typer.Option(help="Film the shipped real people (10 GRID speakers, 2 portraits) too."),
    ] = True,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Make a labelled synthetic dataset (self-blends and face swaps of real faces)."""
    from rich.progress import Progress

    from deepfake_detect.synth import generate_dataset

    with Progress(console=console, disable=quiet) as bar:
        task = bar.add_task("synth clips", total=videos)
        manifest = generate_dataset(
            output_dir, videos, seed, faces or (), size, fps, seconds, fake_fraction,
            on_clip=lambda _path: bar.advance(task), corpus=corpus,
        )  # fmt: skip
    fakes = int(manifest.label.sum())
    console.print(
        f"{len(manifest)} clips ({fakes} fake) in {output_dir}; "
        "manifest.csv lists how each was made",
        highlight=False,
    )


@app.command()
def train(
    ctx: typer.Context,
    train: Annotated[
        Path | None, typer.Option(help="Preprocessed folder (or its metadata.csv) to train on.")
    ] = None,
    val: Annotated[
        Path | None,
        typer.Option(help="Validation folder; default: --train's rows with split val."),
    ] = None,
    output_dir: Annotated[Path | None, typer.Option(help="Run folder.")] = None,
    resume_checkpoint: Annotated[
        str | None, typer.Option(help="A .ckpt to resume, or 'last' for this run's own.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML file of any of these options (flags win).")
    ] = None,
    model: Annotated[
        str, typer.Option(help="meso4, mesoinception4 or any timm name (efficientnet_b0...).")
    ] = "meso4",
    pretrained: Annotated[
        bool, typer.Option(help="Start from pretrained weights (timm; needs the network).")
    ] = False,
    image_size: Annotated[
        int | None, typer.Option(min=32, help="Input size [default: the model's].")
    ] = None,
    drop_rate: Annotated[float, typer.Option(min=0.0, max=0.9, help="Dropout.")] = 0.5,
    augment: Annotated[
        str, typer.Option(help="Augmentation preset: none, light, strong.")
    ] = "light",
    self_blend: Annotated[
        float,
        typer.Option(min=0.0, max=0.95, help="Share of pseudo-fakes self-blended from reals."),
    ] = 0.0,
    real_only: Annotated[
        bool,
        typer.Option(help="Train on the real videos only; --self-blend makes the fakes."),
    ] = False,
    balance: Annotated[bool, typer.Option(help="Balance classes by resampling videos.")] = True,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    crops_per_video: Annotated[
        int, typer.Option(min=1, help="Crops drawn per video per epoch.")
    ] = 8,
    val_crops_per_video: Annotated[int, typer.Option(min=1)] = 16,
    lr: Annotated[float, typer.Option(min=0.0, help="Peak learning rate (AdamW).")] = 1e-3,
    weight_decay: Annotated[float, typer.Option(min=0.0)] = 1e-4,
    warmup_epochs: Annotated[float, typer.Option(min=0.0)] = 1.0,
    max_epochs: Annotated[int, typer.Option(min=1)] = 30,
    max_minutes: Annotated[
        float | None, typer.Option(min=0.01, help="Stop training after this much time.")
    ] = None,
    patience: Annotated[
        int, typer.Option(min=1, help="Epochs without a better --monitor before stopping.")
    ] = 5,
    monitor: Annotated[
        str,
        typer.Option(
            help="Chooses the best epoch and stops early: val_selection (video AUC, "
            "calibrated loss tie-break), val_video_auc, val_loss, ..."
        ),
    ] = "val_selection",
    target_auc: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Stop once val video AUC reaches it.")
    ] = None,
    num_workers: Annotated[int, typer.Option(min=0, help="Data loader processes.")] = 0,
    accelerator: Annotated[
        str, typer.Option(help="Lightning accelerator: auto, cpu, gpu.")
    ] = "auto",
    devices: Annotated[str, typer.Option(help="Lightning devices: auto, 1, 4, ...")] = "auto",
    strategy: Annotated[str, typer.Option(help="Lightning strategy: auto, ddp, ...")] = "auto",
    precision: Annotated[
        str | None, typer.Option(help="Lightning precision [default: 16-mixed on GPU, else 32].")
    ] = None,
    gradient_clip: Annotated[float, typer.Option(min=0.0)] = 1.0,
    seed: Annotated[int, typer.Option()] = 0,
    allow_leakage: Annotated[
        bool, typer.Option(help="Train even when groups are in both train and val.")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bars or tables.")] = False,
) -> None:
    """Train a detector on stage-1 crops; write checkpoints, logs and the model artifact."""
    from deepfake_detect.training import TrainConfig, TrainError, run_training

    given = {
        name: value
        for name, value in ctx.params.items()
        if name not in {"config", "quiet"}
        and ctx.get_parameter_source(name).name != "DEFAULT"  # typer bundles its own click
    } | {"progress": not quiet}
    if config is not None:
        options = TrainConfig.from_yaml(config, **given)
    else:
        defaults = {k: v for k, v in ctx.params.items() if k not in {"config", "quiet"}}
        if train is None or output_dir is None:
            raise TrainError("give --train and --output-dir (or a --config that sets them)")
        options = TrainConfig(**(defaults | given))
    result = run_training(options, console)
    video = result.metrics
    console.print(
        f"model artifact: {result.artifact_dir}  (val video AUC {video['auc']:.4f}, "
        f"EER {video['eer']:.4f})",
        highlight=False,
    )


@app.command()
def predict(
    inputs: Annotated[list[str], typer.Argument(help="Video files, folders (recursive), globs.")],
    model: Annotated[Path, typer.Option(help="Training run folder or its model artifact.")],
    frames: Annotated[
        int, typer.Option(min=1, help="Evenly spaced frames per video, at least.")
    ] = 32,
    every: Annotated[
        float,
        typer.Option(min=0.0, help="Seconds between samples in long videos (0: --frames only)."),
    ] = 1.0,
    max_frames: Annotated[
        int, typer.Option(min=1, help="At most this many samples, spread over the video.")
    ] = 600,
    aggregation: Annotated[
        str | None,
        typer.Option(
            help="Frame scores to a person's: mean, median, max, vote, confident, "
            "dfdc_confident; or max_face_mean over each frame's faces [default: the model's]."
        ),
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Override the artifact's threshold.")
    ] = None,
    uncertain: Annotated[
        bool,
        typer.Option(
            help="Call UNCERTAIN the videos in the model's uncertain band; "
            "--no-uncertain forces REAL or FAKE."
        ),
    ] = True,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    backend: Annotated[str, typer.Option(help="torch, or onnx (after `export --onnx`).")] = "torch",
    batch_size: Annotated[int, typer.Option(min=1, help="Crops per forward pass.")] = 64,
    min_frames: Annotated[
        int, typer.Option(min=1, help="Fewer frames with a face: too_few_frames.")
    ] = 1,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write verdicts as JSON.")
    ] = None,
    csv_path: Annotated[Path | None, typer.Option("--csv", help="Write verdicts as CSV.")] = None,
    per_frame: Annotated[
        bool, typer.Option(help="Per-frame scores in the JSON, and a *_frames.csv beside --csv.")
    ] = False,
    report: Annotated[Path | None, typer.Option(help="Write an HTML report here.")] = None,
    annotate: Annotated[
        Path | None, typer.Option(help="Write the (first) video with scored face boxes here.")
    ] = None,
    annotate_segments: Annotated[
        bool, typer.Option(help="--annotate writes only the fake-looking segments.")
    ] = False,
    max_pixels: Annotated[
        int, typer.Option(min=1, help="Refuse videos with larger frames (default: 8K UHD).")
    ] = MAX_PIXELS,
) -> None:
    """Judge videos: a verdict per video and per person, and the segments that look fake;
    exit 1 if some could not be scored."""
    from deepfake_detect.inference import (
        Predictor,
        collect_videos,
        verdict_table,
        write_csv,
        write_json,
    )

    videos = collect_videos(inputs)
    predictor = Predictor(
        model, device=device, backend=backend, frames=frames, every=every or None,
        max_frames=max_frames, aggregation=aggregation, threshold=threshold,
        uncertain=uncertain, batch_size=batch_size, min_frames=min_frames,
        max_pixels=max_pixels,
    )  # fmt: skip
    predictions = _judge_all(predictor, videos, keep_crops=report is not None)
    console.print(verdict_table(predictions))
    if json_path:
        write_json(predictions, json_path, per_frame)
    if csv_path:
        write_csv(predictions, csv_path, per_frame)
    if report:
        from deepfake_detect.report import write_report

        write_report(predictions, predictor, report)
        console.print(f"report: {report}", highlight=False)
    if annotate:
        from deepfake_detect.report import annotate_video

        scored = [p for p in predictions if p.frames]
        if annotate_segments and scored and not scored[0].segments:
            message = f"{scored[0].path}: no fake-looking segment; no video written"
            console.print(escape(message), highlight=False)
        elif scored:
            annotate_video(scored[0], annotate, segments_only=annotate_segments)
            console.print(f"annotated video: {annotate}", highlight=False)
    if not all(p.scored for p in predictions):
        raise typer.Exit(code=1)


def _judge_all(predictor: Predictor, videos: list[Path], keep_crops: bool) -> list[VideoPrediction]:
    """Judge each video with two progress bars: videos done, and the time processed of the
    current one out of its duration."""
    from rich.progress import BarColumn, Progress, TextColumn

    from deepfake_detect.segments import clock

    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[done]}"))
    predictions = []
    with Progress(*columns, console=console, transient=True) as bar:
        overall = bar.add_task("predict", total=len(videos), done=f"0/{len(videos)} videos")
        current = bar.add_task("", total=1, done="")

        def show(seconds: float, duration: float) -> None:
            done = f"{clock(seconds)} / {clock(duration)}"
            bar.update(current, total=max(duration, 1e-9), completed=seconds, done=done)

        for number, video in enumerate(videos, start=1):
            bar.reset(current, total=1, description=f"  {video.name}", done="")
            predictions.append(predictor.predict(video, keep_crops, on_progress=show))
            bar.update(overall, completed=number, done=f"{number}/{len(videos)} videos")
    return predictions


@app.command()
def evaluate(
    data: Annotated[Path, typer.Argument(help="A preprocessed folder, or a labelled dataset.")],
    model: Annotated[Path, typer.Option(help="Training run folder or its model artifact.")],
    output_dir: Annotated[Path, typer.Option(help="Gets evaluation.json, videos.csv, PNGs.")],
    dataset_format: Annotated[
        DatasetFormat, typer.Option(help="Layout of raw videos (auto reads a stage-1 folder).")
    ] = DatasetFormat.auto,
    split: Annotated[str | None, typer.Option(help="Only this split: train, val or test.")] = None,
    splits_dir: Annotated[
        Path | None, typer.Option(help="FF++ official split files, for raw FF++.")
    ] = None,
    frames: Annotated[int, typer.Option(min=1, help="Frames per raw video.")] = 32,
    aggregation: Annotated[
        str | None, typer.Option(help="As for predict [default: the model's].")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Override the artifact's threshold.")
    ] = None,
    uncertain: Annotated[
        bool, typer.Option(help="As for predict: --no-uncertain calls every video.")
    ] = True,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    backend: Annotated[str, typer.Option(help="torch or onnx.")] = "torch",
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    min_frames: Annotated[int, typer.Option(min=1)] = 1,
    allow_outside_root: Annotated[
        bool, typer.Option(help="Read files a CSV lists outside its folder (else refused).")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="No progress or tables.")] = False,
) -> None:
    """Score a labelled set: AUC, EER, AP, accuracy, log loss, confusion, per method, plots."""
    from deepfake_detect.evaluate import evaluate as run_evaluation
    from deepfake_detect.inference import Predictor

    output_dir.mkdir(parents=True, exist_ok=True)
    predictor = Predictor(  # exactly --frames per raw video, as stage 1 samples them
        model, device=device, backend=backend, frames=frames, every=None,
        aggregation=aggregation, threshold=threshold, uncertain=uncertain,
        batch_size=batch_size, min_frames=min_frames,
    )  # fmt: skip
    result = run_evaluation(
        data, predictor, output_dir, dataset_format=dataset_format.value, split=split,
        splits_dir=splits_dir, allow_outside_root=allow_outside_root, progress=not quiet,
        console=console,
    )  # fmt: skip
    console.print(f"evaluation: {result.output_dir / 'evaluation.json'}", highlight=False)


@app.command()
def export(
    model: Annotated[Path, typer.Argument(help="Training run folder or its model artifact.")],
    onnx: Annotated[
        bool, typer.Option("--onnx", help="Write model.onnx beside the weights.")
    ] = False,
    output: Annotated[Path | None, typer.Option(help="Where to write [default: beside].")] = None,
) -> None:
    """Export a model for other runtimes (ONNX, checked against torch within 1e-4)."""
    from deepfake_detect.export import export_onnx

    if not onnx:
        raise fail_usage("choose a format: --onnx")
    path = export_onnx(model, output)
    console.print(f"ONNX model: {path} (predict with --backend onnx)", highlight=False)


@app.command("import")
def import_model(
    detector: Annotated[str, typer.Argument(help="Which published detector: sbi, dfdc or gend.")],
    checkpoints: Annotated[
        list[Path],
        typer.Argument(help="Its checkpoint file(s) as its authors publish them, or a folder."),
    ],
    output_dir: Annotated[Path, typer.Option(help="Where the model artifact is written.")],
    face_detector: Annotated[
        Detector | None,
        typer.Option(help="Stage-1 detector [default: the closest to the authors' one]."),
    ] = None,
) -> None:
    """Convert a published detector's checkpoints into a model artifact (no pickle in it)."""
    from deepfake_detect.published import import_detector

    path = import_detector(
        detector, checkpoints, output_dir, face_detector.value if face_detector else None
    )
    from deepfake_detect.artifact import read_artifact

    provenance = read_artifact(path)[0].provenance
    lines = [f"model artifact: {path.parent}", f"source: {provenance.source}",
             f"licence: {provenance.licence}", f"reported by its authors: {provenance.reported}",
             "what still differs from the authors' pipeline:",
             *(f"  - {difference}" for difference in provenance.differences)]  # fmt: skip
    console.print(escape("\n".join(lines)), highlight=False, soft_wrap=True)


@app.command()
def serve(
    model: Annotated[Path, typer.Option(help="Training run folder or its model artifact.")],
    host: Annotated[
        str, typer.Option(help="Interface; anything but loopback needs --token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Videos judged at the same time.")] = 1,
    max_upload_mb: Annotated[float, typer.Option(min=0.001, help="Largest upload.")] = 200,
    queue: Annotated[
        int, typer.Option(min=1, help="Jobs waiting or running before uploads get 429.")
    ] = 16,
    token: Annotated[
        str | None, typer.Option(help="Bearer token every API call must send.")
    ] = None,
    retention_minutes: Annotated[
        float, typer.Option(min=0.1, help="Finished jobs and their files are deleted after.")
    ] = 60,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(help="Another name the server answers to in Host (repeatable)."),
    ] = None,
    upload_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds an upload may take (at 16 kB/s or more).")
    ] = 1800,
    max_connections: Annotated[
        int, typer.Option(min=2, help="Open connections at once; requests beyond get 503.")
    ] = 32,
) -> None:
    """Check videos in the browser: a local web page and REST API over predict."""
    from deepfake_detect.extras import require_extra

    require_extra("serve", "deepfake-detect serve")
    from deepfake_detect.serve import serve as run_server

    run_server(
        model, host=host, port=port, workers=workers, max_upload_mb=max_upload_mb,
        queue=queue, token=token, retention_s=retention_minutes * 60, device=device,
        allowed_hosts=allowed_host or (), upload_timeout_s=upload_timeout,
        max_connections=max_connections,
    )  # fmt: skip


@app.command()
def demo(
    output_dir: Annotated[Path, typer.Option(help="Where the demo writes.")] = Path("demo-output"),
    quick: Annotated[bool, typer.Option(help="A reduced run (seconds), as the tests use.")] = False,
    fresh: Annotated[
        bool, typer.Option(help="Start over instead of reusing finished steps.")
    ] = False,
    seed: Annotated[
        int, typer.Option(help="Seed of the synthetic clips and of training (use with --fresh).")
    ] = 0,
) -> None:
    """The whole pipeline on built-in data: synth, preprocess, train, evaluate, predict, report."""
    from deepfake_detect.demo import run_demo

    result = run_demo(output_dir, quick=quick, fresh=fresh, seed=seed, console=console)
    auc = result.evaluation.summary["video"]["auc"]
    console.print(f"\ndemo done: test video AUC {auc:.3f}; report {result.report}", highlight=False)


@datasets_app.command("list")
def datasets_list() -> None:
    """Each supported dataset: what it holds, its size, its terms, where to request it."""
    from deepfake_detect.dataset_catalog import catalog_table

    Console().print(catalog_table())


@datasets_app.command("check")
def datasets_check(
    dataset_dir: Annotated[Path, typer.Argument(help="A downloaded dataset (or its CSV list).")],
    dataset_format: Annotated[
        DatasetFormat, typer.Option(help="Layout of the dataset; auto detects it as stage 1 does.")
    ] = DatasetFormat.auto,
    sample: Annotated[
        int | None, typer.Option(min=1, help="Probe only N videos drawn at random [default: all].")
    ] = None,
    manifest: Annotated[
        Path | None, typer.Option(help="Write path, size and SHA-256 of every file here (CSV).")
    ] = None,
    verify: Annotated[
        Path | None, typer.Option(help="Compare every file with a manifest written elsewhere.")
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write every finding as JSON.")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Count a download against the official contents and probe its videos: exit 0 when
    complete, 1 when usable with gaps."""
    import json
    from dataclasses import asdict

    from deepfake_detect.dataset_check import (
        check_dataset,
        check_findings,
        check_summary,
        check_table,
        progress_tracker,
        verify_manifest,
        write_manifest,
    )

    tracker = None if quiet else progress_tracker(console)
    check = check_dataset(dataset_dir, dataset_format.value, sample, tracker=tracker)
    if verify:
        check.manifest = verify_manifest(dataset_dir, verify, tracker)
    if manifest:
        count = write_manifest(dataset_dir, manifest, tracker)
        console.print(escape(f"manifest of {count} files: {manifest}"), highlight=False)
    Console().print(check_table(check))
    for line in check_findings(check):
        console.print(escape(line), highlight=False, soft_wrap=True)
    if json_path:
        document = asdict(check) | {"complete": check.complete}
        json_path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    console.print(escape(check_summary(check)), highlight=False)
    raise typer.Exit(code=0 if check.complete else 1)
