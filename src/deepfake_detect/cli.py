"""The `deepfake-detect` command: a thin typer layer over the stages' Python API."""

from __future__ import annotations

from dataclasses import fields
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from deepfake_detect import __version__
from deepfake_detect.crops import CropConfig
from deepfake_detect.dataset_layouts import ADAPTERS
from deepfake_detect.errors import DeepfakeDetectError
from deepfake_detect.faces import CROP_SHAPES, DETECTORS
from deepfake_detect.preprocess import EXECUTORS, VideoDataProcessor
from deepfake_detect.status import Status
from deepfake_detect.train_config import RULES, TrainConfig
from deepfake_detect.video import MAX_PIXELS

if TYPE_CHECKING:
    from collections.abc import Iterator

    from deepfake_detect.inference import Predictor, VideoPrediction
    from deepfake_detect.ray_executor import RayPredictors

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
Executor = StrEnum("Executor", {name: name for name in EXECUTORS})
ExecutorOption = Annotated[
    Executor, typer.Option(help="local processes, or ray (tasks on a Ray cluster; [ray] extra).")
]
RayAddress = Annotated[
    str | None, typer.Option(help="Ray cluster: auto or ray://host:port [default: local Ray].")
]
GpusPerActor = Annotated[
    float, typer.Option(min=0.0, help="With ray: GPUs per model actor (0: one actor per CPU).")
]


def config_option(config: type, name: str, *flags: str, **settings: Any) -> Any:
    """A typer option whose default and help are those of the settings dataclass field
    `config.name` (see `schema.setting`): the dataclass is the single home of both."""
    (field,) = (f for f in fields(config) if f.name == name)
    return typer.Option(field.default, *flags, help=field.metadata["help"], **settings)


def crop_option(name: str, *flags: str, **settings: Any) -> Any:
    """An option of stage 1's crop settings (`CropConfig`)."""
    return config_option(CropConfig, name, *flags, **settings)


def train_option(name: str, *flags: str, **settings: Any) -> Any:
    """An option of a training run (`TrainConfig`)."""
    return config_option(TrainConfig, name, *flags, **settings)


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


# Options that several commands share, declared once (defaults: Predictor's, CropConfig's).
MODEL_OPTION = typer.Option(..., help="Training run folder or its model artifact.")
FRAMES_OPTION = typer.Option(32, min=1, help="Evenly spaced frames per video, at least.")
AGGREGATION_OPTION = typer.Option(
    None, help=f"Frame scores to a person's: {RULES} (default: the model's)."
)
THRESHOLD_OPTION = typer.Option(None, min=0.0, max=1.0, help="Override the artifact's threshold.")
UNCERTAIN_OPTION = typer.Option(
    True,
    help="Call UNCERTAIN the videos in the model's uncertain band; "
    "--no-uncertain forces REAL or FAKE.",
)
DEVICE_OPTION = typer.Option("auto", help="auto, cpu or cuda.")
BACKEND_OPTION = typer.Option("torch", help="torch, or onnx (after `export --onnx`).")
BATCH_SIZE_OPTION = typer.Option(64, min=1, help="Crops per forward pass.")
MIN_FRAMES_OPTION = typer.Option(1, min=1, help="Fewer frames with a face: too_few_frames.")
MAX_PIXELS_OPTION = typer.Option(
    MAX_PIXELS, min=1, help="Refuse videos with larger frames (default: 8K UHD)."
)
ALLOW_OUTSIDE_ROOT_OPTION = typer.Option(
    False, help="Read files a CSV lists outside its folder (else refused)."
)


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
    use_face_detection: bool = crop_option(
        "use_face_detection", "--use-face-detection/--no-face-detection"
    ),
    face_detector: Detector = crop_option("face_detector"),
    frame_sampling_rate: int | None = crop_option("frame_sampling_rate", min=1),
    frames_per_video: int | None = crop_option("frames_per_video", min=1),
    max_frames: int | None = crop_option("max_frames", min=1),
    crop_size: int = crop_option("crop_size", min=16, max=2048),
    margin: float = crop_option("margin", min=0.0, max=2.0),
    crop_shape: CropShape = crop_option("crop_shape"),
    faces_per_frame: int | None = crop_option("faces_per_frame", min=1),
    detect_size: int = crop_option("detect_size", min=64),
    scan_every: int = crop_option("scan_every", min=1),
    align: bool = crop_option("align"),
    num_workers: Annotated[
        int | None, typer.Option(min=0, help="Worker processes [default: CPU count].")
    ] = None,
    executor: ExecutorOption = Executor.local,
    ray_address: RayAddress = None,
    max_pixels: int = MAX_PIXELS_OPTION,
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
    allow_outside_root: bool = ALLOW_OUTSIDE_ROOT_OPTION,
    quiet: Annotated[bool, typer.Option(help="No progress bar or summary.")] = False,
) -> None:
    """Sample frames, detect and crop faces, save .npy crops plus metadata.csv and crops.csv."""
    crops = CropConfig(
        use_face_detection=use_face_detection,
        face_detector=face_detector,
        frame_sampling_rate=frame_sampling_rate,
        frames_per_video=frames_per_video,
        max_frames=max_frames,
        crop_size=crop_size,
        margin=margin,
        crop_shape=crop_shape,
        faces_per_frame=faces_per_frame,
        detect_size=detect_size,
        scan_every=scan_every,
        align=align,
    )
    processor = VideoDataProcessor(
        dataset_dirs,
        output_dir,
        crops=crops,
        dataset_format=dataset_format.value,
        resume=resume,
        num_workers=num_workers,
        executor=executor.value,
        ray_address=ray_address,
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
            output_dir,
            videos,
            seed,
            faces or (),
            size,
            fps,
            seconds,
            fake_fraction,
            on_clip=lambda _path: bar.advance(task),
            corpus=corpus,
        )
    fakes = int(manifest.label.sum())
    console.print(
        f"{len(manifest)} clips ({fakes} fake) in {output_dir}; "
        "manifest.csv lists how each was made",
        highlight=False,
    )


@app.command()
def train(
    ctx: typer.Context,
    train: Path | None = train_option("train"),
    val: Path | None = train_option("val"),
    output_dir: Path | None = train_option("output_dir"),
    resume_checkpoint: str | None = train_option("resume_checkpoint"),
    config: Annotated[
        Path | None, typer.Option(help="YAML file of any of these options (flags win).")
    ] = None,
    model: str = train_option("model"),
    pretrained: bool = train_option("pretrained"),
    image_size: int | None = train_option("image_size", min=32),
    drop_rate: float = train_option("drop_rate", min=0.0, max=0.9),
    augment: str = train_option("augment"),
    self_blend: float = train_option("self_blend", min=0.0, max=0.95),
    real_only: bool = train_option("real_only"),
    balance: bool = train_option("balance"),
    batch_size: int = train_option("batch_size", min=1),
    crops_per_video: int = train_option("crops_per_video", min=1),
    val_crops_per_video: int = train_option("val_crops_per_video", min=1),
    lr: float = train_option("lr", min=0.0),
    weight_decay: float = train_option("weight_decay", min=0.0),
    warmup_epochs: float = train_option("warmup_epochs", min=0.0),
    max_epochs: int = train_option("max_epochs", min=1),
    max_minutes: float | None = train_option("max_minutes", min=0.01),
    patience: int = train_option("patience", min=1),
    monitor: str = train_option("monitor"),
    aggregation: str = train_option("aggregation"),
    target_auc: float | None = train_option("target_auc", min=0.0, max=1.0),
    num_workers: int = train_option("num_workers", min=0),
    accelerator: str = train_option("accelerator"),
    devices: str = train_option("devices"),
    strategy: str = train_option("strategy"),
    num_nodes: int = train_option("num_nodes", min=1),
    precision: str | None = train_option("precision"),
    gradient_clip: float = train_option("gradient_clip", min=0.0),
    seed: int = train_option("seed"),
    allow_leakage: bool = train_option("allow_leakage"),
    quiet: Annotated[bool, typer.Option(help="No progress bars or tables.")] = False,
) -> None:
    """Train a detector on stage-1 crops; write checkpoints, logs and the model artifact."""
    from deepfake_detect.training import run_training

    given = {  # flags given on the command line; the rest come from --config or TrainConfig
        name: value
        for name, value in ctx.params.items()
        if name not in {"config", "quiet"}
        and ctx.get_parameter_source(name).name != "DEFAULT"  # typer bundles its own click
    } | {"progress": not quiet}
    options = TrainConfig.from_yaml(config, **given) if config else TrainConfig(**given)
    result = run_training(options, console)
    video = result.metrics
    if not video:  # a DDP rank other than 0: rank 0 reports
        return
    console.print(
        f"model artifact: {result.artifact_dir}  (val video AUC {video['auc']:.4f}, "
        f"EER {video['eer']:.4f})",
        highlight=False,
    )


@app.command()
def predict(
    inputs: Annotated[list[str], typer.Argument(help="Video files, folders (recursive), globs.")],
    model: Path = MODEL_OPTION,
    frames: int = FRAMES_OPTION,
    every: Annotated[
        float,
        typer.Option(min=0.0, help="Seconds between samples in long videos (0: --frames only)."),
    ] = 1.0,
    max_frames: Annotated[
        int, typer.Option(min=1, help="At most this many samples, spread over the video.")
    ] = 600,
    aggregation: str | None = AGGREGATION_OPTION,
    threshold: float | None = THRESHOLD_OPTION,
    uncertain: bool = UNCERTAIN_OPTION,
    device: str = DEVICE_OPTION,
    backend: str = BACKEND_OPTION,
    batch_size: int = BATCH_SIZE_OPTION,
    min_frames: int = MIN_FRAMES_OPTION,
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
    max_pixels: int = MAX_PIXELS_OPTION,
    executor: ExecutorOption = Executor.local,
    ray_address: RayAddress = None,
    gpus_per_actor: GpusPerActor = 0.0,
) -> None:
    """Judge videos: a verdict per video and per person, and the segments that look fake;
    exit 1 if some could not be scored."""
    from deepfake_detect.inference import PredictionWriter, collect_videos, verdict_table

    videos = collect_videos(inputs)
    options = dict(
        device=device,
        backend=backend,
        frames=frames,
        every=every or None,
        max_frames=max_frames,
        aggregation=aggregation,
        threshold=threshold,
        uncertain=uncertain,
        batch_size=batch_size,
        min_frames=min_frames,
        max_pixels=max_pixels,
    )
    predictor, pool = _predictors(model, options, executor, ray_address, gpus_per_actor)
    with PredictionWriter(json_path, csv_path, per_frame) as writer:
        predictions = []
        for prediction in _judge_all(predictor, videos, report is not None, pool):
            writer.add(prediction)  # written as each video is judged
            predictions.append(prediction)
    console.print(verdict_table(predictions))
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


def _predictors(
    model: Path, options: dict, executor: Executor, address: str | None, gpus_per_actor: float
) -> tuple[Predictor, RayPredictors | None]:
    """The model loaded here and, with --executor ray, a pool of copies on Ray (this copy
    then stays on the CPU: it only applies the rule and draws the report)."""
    from deepfake_detect.inference import Predictor

    if executor != Executor.ray:
        return Predictor(model, **options), None
    from deepfake_detect.extras import require_extra

    require_extra("ray", "--executor ray")
    predictor = Predictor(model, **options | {"device": "cpu"})  # bad options fail here, once
    from deepfake_detect.ray_executor import RayPredictors

    return predictor, RayPredictors(model, options, address=address, gpus_per_actor=gpus_per_actor)


def _judge_all(
    predictor: Predictor, videos: list[Path], keep_crops: bool, pool: RayPredictors | None
) -> Iterator[VideoPrediction]:
    """Judge each video (on the pool when there is one, in any order), with a progress bar
    of videos done and, here, one of the time processed of the current video."""
    from rich.progress import BarColumn, Progress, TextColumn

    from deepfake_detect.segments import clock

    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[done]}"))
    with Progress(*columns, console=console, transient=True) as bar:
        overall = bar.add_task("predict", total=len(videos), done=f"0/{len(videos)} videos")
        if pool is not None:
            for number, (_, prediction) in enumerate(pool.predict_all(videos, keep_crops), 1):
                bar.update(overall, completed=number, done=f"{number}/{len(videos)} videos")
                yield prediction
            return
        current = bar.add_task("", total=1, done="")

        def show(seconds: float, duration: float) -> None:
            done = f"{clock(seconds)} / {clock(duration)}"
            bar.update(current, total=max(duration, 1e-9), completed=seconds, done=done)

        for number, video in enumerate(videos, start=1):
            bar.reset(current, total=1, description=f"  {video.name}", done="")
            yield predictor.predict(video, keep_crops, on_progress=show)
            bar.update(overall, completed=number, done=f"{number}/{len(videos)} videos")


@app.command()
def evaluate(
    data: Annotated[Path, typer.Argument(help="A preprocessed folder, or a labelled dataset.")],
    output_dir: Annotated[Path, typer.Option(help="Gets evaluation.json, videos.csv, PNGs.")],
    model: Path = MODEL_OPTION,
    dataset_format: Annotated[
        DatasetFormat, typer.Option(help="Layout of raw videos (auto reads a stage-1 folder).")
    ] = DatasetFormat.auto,
    split: Annotated[str | None, typer.Option(help="Only this split: train, val or test.")] = None,
    splits_dir: Annotated[
        Path | None, typer.Option(help="FF++ official split files, for raw FF++.")
    ] = None,
    frames: int = FRAMES_OPTION,
    aggregation: str | None = AGGREGATION_OPTION,
    threshold: float | None = THRESHOLD_OPTION,
    uncertain: bool = UNCERTAIN_OPTION,
    device: str = DEVICE_OPTION,
    backend: str = BACKEND_OPTION,
    batch_size: int = BATCH_SIZE_OPTION,
    min_frames: int = MIN_FRAMES_OPTION,
    allow_outside_root: bool = ALLOW_OUTSIDE_ROOT_OPTION,
    quiet: Annotated[bool, typer.Option(help="No progress or tables.")] = False,
    executor: ExecutorOption = Executor.local,
    ray_address: RayAddress = None,
    gpus_per_actor: GpusPerActor = 0.0,
) -> None:
    """Score a labelled set: AUC, EER, AP, accuracy, log loss, confusion, per method, plots."""
    from deepfake_detect.evaluate import evaluate as run_evaluation

    output_dir.mkdir(parents=True, exist_ok=True)
    options = dict(  # exactly --frames per raw video, as stage 1 samples them
        device=device,
        backend=backend,
        frames=frames,
        every=None,
        aggregation=aggregation,
        threshold=threshold,
        uncertain=uncertain,
        batch_size=batch_size,
        min_frames=min_frames,
    )
    predictor, pool = _predictors(model, options, executor, ray_address, gpus_per_actor)
    result = run_evaluation(
        data,
        predictor,
        output_dir,
        dataset_format=dataset_format.value,
        split=split,
        splits_dir=splits_dir,
        allow_outside_root=allow_outside_root,
        progress=not quiet,
        console=console,
        pool=pool,
    )
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
    lines = [
        f"model artifact: {path.parent}",
        f"source: {provenance.source}",
        f"licence: {provenance.licence}",
        f"reported by its authors: {provenance.reported}",
        "what still differs from the authors' pipeline:",
        *(f"  - {difference}" for difference in provenance.differences),
    ]
    console.print(escape("\n".join(lines)), highlight=False, soft_wrap=True)


@app.command()
def serve(
    model: Path = MODEL_OPTION,
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
        model,
        host=host,
        port=port,
        workers=workers,
        max_upload_mb=max_upload_mb,
        queue=queue,
        token=token,
        retention_s=retention_minutes * 60,
        device=device,
        allowed_hosts=allowed_host or (),
        upload_timeout_s=upload_timeout,
        max_connections=max_connections,
    )


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
    align: Annotated[bool, typer.Option(help="Align the face crops (preprocess --align).")] = False,
) -> None:
    """The whole pipeline on built-in data: synth, preprocess, train, evaluate, predict, report."""
    from deepfake_detect.demo import run_demo

    result = run_demo(output_dir, quick=quick, fresh=fresh, seed=seed, align=align, console=console)
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
