"""Stage-2 throughput benchmark: training crops/s against the data loader alone.

For each model it measures, on a synthetic stage-1 folder:
  loader-only  the project's training DataLoader (CropDataset + EpochSampler + augmentation,
               `--workers` processes), iterated with nothing else to do;
  model-only   training steps (forward, BCE loss, backward, clipping, AdamW) of the project's
               LightningModule on random tensors already on the device: no loader at all;
  train        the real thing: Lightning's Trainer fitting that module from that loader, with
               the step settings of `training.step_settings` (precision, gradient clipping,
               deterministic algorithms).
The first few batches of each are a warm-up and are not timed. Whichever of loader-only and
model-only is slower is the bottleneck. On a GPU it also samples the GPU's utilisation during
the timed training steps and reports peak memory.

    .venv/bin/python bench/train.py                  # CPU: meso4 at 256, efficientnet_b0 at 224
    .venv/bin/python bench/train.py --gpu            # GPU: efficientnet_b4 at 380, 16-mixed
    .venv/bin/python bench/train.py --models meso4:256 --batches 16 --workers 0

Without `--models`, a machine with CUDA runs the GPU preset (with `--models`, add `--gpu` to
run them on the GPU). No network is needed: models are built without pretrained weights. Data
goes to a temporary folder unless `--workdir` is given; everything is printed to stdout.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import timm
import torch
from _common import quiet_lightning
from lightning.pytorch.callbacks import Callback
from machine_load import cpu_snapshot, other_share
from torch.utils.data import DataLoader

from deepfake_detect.models import ModelConfig, ModelError, create_model
from deepfake_detect.training import (
    CropDataModule,
    DeepfakeClassifier,
    TrainConfig,
    step_settings,
)
from deepfake_detect.training_data import (
    AUGMENTATIONS,
    CropVideo,
    read_metadata,
    select_split,
    write_crops_folder,
)

STAGE1_CROP = 256  # stage 1's default crop size; larger inputs get crops at their own size
GPU_SAMPLE_SECONDS = 0.5
BUSY_ELSEWHERE = 0.1  # warn when other processes took more than this share of the CPUs
SMI_QUERY = ["--query-gpu=uuid,utilization.gpu", "--format=csv,noheader,nounits"]


@dataclass(frozen=True)
class Preset:
    """Defaults of one kind of run."""

    models: tuple[tuple[str, int], ...]
    batch_size: int
    batches: int
    workers: int
    videos: int
    crops_per_video: int


CPU = Preset((("meso4", 256), ("efficientnet_b0", 224)), 16, 8, 2, 32, 16)
GPU = Preset((("efficientnet_b4", 380),), 32, 40, 8, 128, 16)


@dataclass(frozen=True)
class Settings:
    """What every model of a run shares."""

    device: torch.device
    batch_size: int
    batches: int
    workers: int
    augment: str
    self_blend: float
    workdir: Path

    @property
    def warmup(self) -> int:
        """Untimed batches first: worker start-up, allocator and kernel selection."""
        return max(2, self.workers)

    @property
    def precision(self) -> str:
        return "16-mixed" if self.device.type == "cuda" else "32-true"


@dataclass(frozen=True)
class Timing:
    """One timed window: crops processed, wall seconds, and the share of all CPUs that
    processes outside this benchmark used meanwhile (a busy shared machine shows up here
    instead of silently lowering the figures)."""

    crops: int
    seconds: float
    other_cpu: float

    @property
    def rate(self) -> float:
        return self.crops / self.seconds


class Stopwatch:
    """Times a window and measures the CPU time other processes used in it."""

    def start(self) -> None:
        self._start = cpu_snapshot()

    def stop(self, crops: int) -> Timing:
        end = cpu_snapshot()
        return Timing(crops, end[0] - self._start[0], other_share(self._start, end))


@dataclass
class Row:
    """The figures of one model; None where a phase failed (see `notes`)."""

    model: str
    size: int
    crop_px: int
    loader: Timing | None = None
    compute: Timing | None = None
    train: Timing | None = None
    util: list[float] = field(default_factory=list)
    peak_gib: float | None = None
    notes: list[str] = field(default_factory=list)


# --- synthetic stage-1 folder --------------------------------------------------------------------


def synthetic_video(rng: np.random.Generator, size: int, crops: int, fake: bool) -> np.ndarray:
    """One video's crops (N, S, S, 3) uint8: a face-like picture (background gradient, skin
    ellipse, eyes, mouth, texture) under small camera shifts and exposure changes. Fakes get a
    colour-shifted inner face under a feathered mask: the seam a blend leaves."""
    axis = np.linspace(-1, 1, size, dtype=np.float32)
    y, x = axis[:, None], axis[None, :]
    top, bottom, skin = rng.uniform(30, 220, (3, 3)).astype(np.float32)
    image = np.broadcast_to(top + (bottom - top) * ((y + 1) / 2)[..., None], (size, size, 3))
    face = np.clip((1 - (x / 0.55) ** 2 - (y / 0.7) ** 2) * 8, 0, 1)[..., None]
    image = image * (1 - face) + skin * face
    for eye_x in (-0.3, 0.3):
        image[((x - eye_x) / 0.1) ** 2 + ((y + 0.2) / 0.06) ** 2 < 1] = 30
    image[(x / 0.25) ** 2 + ((y - 0.4) / 0.07) ** 2 < 1] = (150, 60, 60)
    if fake:
        inner = np.clip((1 - (x / 0.4) ** 2 - (y / 0.5) ** 2) * 4, 0, 1)[..., None]
        image = image * (1 + inner * rng.uniform(-0.15, 0.15, 3).astype(np.float32))
    image += rng.normal(0, 6, image.shape).astype(np.float32)
    base = np.clip(image, 0, 255).astype(np.uint8)
    shifts = rng.integers(-size // 32, size // 32 + 1, (crops, 2))
    gains = rng.uniform(0.85, 1.15, crops)
    levels = np.arange(256, dtype=np.float32)
    return np.stack(
        [
            np.clip(levels * gain, 0, 255).astype(np.uint8)[np.roll(base, tuple(shift), (0, 1))]
            for shift, gain in zip(shifts, gains, strict=True)
        ]
    )


def make_crops_folder(root: Path, size: int, videos: int, crops: int) -> Path:
    """A stage-1 output folder (faces/<id>.npy + metadata.csv), half real, half fake; reused
    when it exists (metadata.csv is written last)."""
    folder = root / f"crops_{size}px_{videos}x{crops}"
    if (folder / "metadata.csv").is_file():
        return folder
    rng = np.random.default_rng(size)
    return write_crops_folder(folder, (
        CropVideo(f"video_{index:04d}", index % 2, "train",
                  synthetic_video(rng, size, crops, index % 2 == 1))
        for index in range(videos)
    ))  # fmt: skip


# --- GPU sampling --------------------------------------------------------------------------------


class GpuSampler:
    """Samples the GPU's utilisation every `interval` seconds in a background thread, through
    `torch.cuda.utilization` (needs pynvml) or else `nvidia-smi`."""

    def __init__(self, interval: float = GPU_SAMPLE_SECONDS) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self._uuid = str(torch.cuda.get_device_properties(torch.cuda.current_device()).uuid)
        self._read, self.source = self._pick_reader()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _pick_reader(self) -> tuple[Callable[[], float | None] | None, str]:
        try:
            torch.cuda.utilization()
            return lambda: float(torch.cuda.utilization()), "torch.cuda.utilization"
        except Exception:  # no pynvml (ImportError), or NVML's own errors
            if shutil.which("nvidia-smi"):
                return self._smi_utilization, "nvidia-smi"
            return None, "nowhere (no pynvml, no nvidia-smi)"

    def _smi_utilization(self) -> float | None:
        try:
            result = subprocess.run(
                ["nvidia-smi", *SMI_QUERY], capture_output=True, text=True, timeout=5, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        lines = [line.split(",") for line in result.stdout.splitlines() if line.count(",") == 1]
        for uuid, utilization in lines:
            if self._uuid in uuid or len(lines) == 1:
                try:
                    return float(utilization)
                except ValueError:  # "[N/A]", e.g. under MIG
                    return None
        return None

    def start(self) -> None:
        if self._read is None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            value = self._read()
            if value is not None:
                self.samples.append(value)


# --- measurements --------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_loader(loader: DataLoader, settings: Settings) -> Timing:
    """The loader alone, after the warm-up batches."""
    iterator = iter(loader)
    for _ in range(settings.warmup):
        next(iterator)
    stopwatch, crops = Stopwatch(), 0
    stopwatch.start()
    for _ in range(settings.batches):
        crops += len(next(iterator)[0])
    return stopwatch.stop(crops)


def time_compute(module: DeepfakeClassifier, config: TrainConfig, settings: Settings) -> Timing:
    """Training steps on random tensors already on the device (no loader), with the Trainer's
    mixed precision and gradient clipping."""
    device, mixed = settings.device, settings.precision == "16-mixed"
    module.to(device).train()
    optimizer = torch.optim.AdamW(module.parameters(), config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=mixed)
    size = module.hparams.model["input_size"]
    images = torch.randn(settings.batch_size, 3, size, size, device=device)
    labels = (torch.arange(settings.batch_size, device=device) % 2).float()

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.float16, enabled=mixed):
            loss = module.loss(module(images), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(module.parameters(), config.gradient_clip)
        scaler.step(optimizer)
        scaler.update()

    for _ in range(settings.warmup):
        step()
    synchronize(device)
    stopwatch = Stopwatch()
    stopwatch.start()
    for _ in range(settings.batches):
        step()
    synchronize(device)
    return stopwatch.stop(settings.batches * settings.batch_size)


class StepClock(Callback):
    """Times the training steps after the warm-up ones; samples the GPU meanwhile."""

    def __init__(self, warmup: int, batches: int, sampler: GpuSampler | None) -> None:
        self.warmup, self.last = warmup, warmup + batches - 1
        self.sampler = sampler
        self.crops = 0
        self.timing: Timing | None = None
        self.peak_gib: float | None = None
        self._stopwatch = Stopwatch()

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: object,
        batch: tuple,
        batch_idx: int,
    ) -> None:
        if batch_idx < self.warmup - 1:
            return
        synchronize(pl_module.device)
        if batch_idx == self.warmup - 1:
            if self.sampler is not None:
                torch.cuda.reset_peak_memory_stats(pl_module.device)
                self.sampler.start()
            self._stopwatch.start()
            return
        self.crops += len(batch[0])
        if batch_idx == self.last:
            self.timing = self._stopwatch.stop(self.crops)
            if self.sampler is not None:
                self.sampler.stop()
                self.peak_gib = torch.cuda.max_memory_allocated(pl_module.device) / 2**30


def build_trainer(settings: Settings, config: TrainConfig, clock: StepClock) -> L.Trainer:
    """A Trainer for `warmup + batches` steps and nothing else, its steps set up as
    `deepfake_detect.training.step_settings` sets up a run's."""
    return L.Trainer(
        **step_settings(config),
        max_epochs=1,
        limit_train_batches=settings.warmup + settings.batches,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[clock],
        default_root_dir=settings.workdir / "lightning",
    )


def attempt(row: Row, phase: str, measure: Callable[[], Timing]) -> Timing | None:
    """Run one measurement; a failure becomes a note, so the other figures still come out
    (a remote GPU run gets one try)."""
    try:
        return measure()
    except Exception as error:
        message = (str(error).strip().splitlines() or [""])[0]
        row.notes.append(f"{phase} failed: {type(error).__name__}: {message[:200]}")
        return None
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def bench_model(model_config: ModelConfig, folder: Path, settings: Settings) -> Row:
    """Loader-only, model-only and Trainer figures of one model."""
    name, size = model_config.name, model_config.input_size
    row = Row(name, size, max(STAGE1_CROP, size))
    table = select_split(*read_metadata(folder), "train")
    needed = (settings.warmup + settings.batches) * settings.batch_size
    config = TrainConfig(
        train=folder, output_dir=settings.workdir / "run", model=name, image_size=size,
        augment=settings.augment, self_blend=settings.self_blend, batch_size=settings.batch_size,
        crops_per_video=math.ceil(needed / len(table.rows)), num_workers=settings.workers,
        accelerator="gpu" if settings.device.type == "cuda" else "cpu", devices="1",
        precision=settings.precision,
    )  # fmt: skip
    L.seed_everything(config.seed, workers=True, verbose=False)

    def fresh_module() -> DeepfakeClassifier:
        network = create_model(name, image_size=size, drop_rate=model_config.drop_rate)[0]
        return DeepfakeClassifier(network, model_config, config.lr, config.weight_decay)

    def loader() -> DataLoader:
        return CropDataModule(table, table, model_config, config).train_dataloader()

    row.loader = attempt(row, "loader-only", lambda: time_loader(loader(), settings))
    report(row, "loader-only", row.loader)
    sampler = GpuSampler() if settings.device.type == "cuda" else None
    clock = StepClock(settings.warmup, settings.batches, sampler)
    # Building the Trainer sets its deterministic flags process-wide, so the model-only steps
    # below run under the same algorithms as the Trainer's.
    trainer = build_trainer(settings, config, clock)
    row.compute = attempt(row, "model-only", lambda: time_compute(fresh_module(), config, settings))
    report(row, "model-only", row.compute)

    def train() -> Timing:
        trainer.fit(fresh_module(), train_dataloaders=loader())
        if clock.timing is None:
            raise RuntimeError(f"training stopped before step {clock.last + 1}")
        return clock.timing

    row.train = attempt(row, "train", train)
    report(row, "train", row.train)
    if sampler is not None:
        sampler.stop()
        row.util, row.peak_gib = sampler.samples, clock.peak_gib
        row.notes.append(f"GPU utilisation: {len(sampler.samples)} samples from {sampler.source}")
    return row


def report(row: Row, phase: str, timing: Timing | None) -> None:
    figure = (
        f"{timing.rate:.1f} crops/s ({timing.crops} crops in {timing.seconds:.1f} s, "
        f"other processes used {timing.other_cpu:.0%} of the CPUs)"
        if timing is not None
        else row.notes[-1]
    )
    print(f"  {row.model} at {row.size}: {phase:<11} {figure}", flush=True)


# --- output --------------------------------------------------------------------------------------


def machine_lines(settings: Settings, threads: int) -> list[str]:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = [
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs ({cpus} usable), "
        f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}",
        f"python {platform.python_version()}, torch {torch.__version__} ({threads} threads), "
        f"lightning {L.__version__}, timm {timm.__version__}",
    ]
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        lines.append(
            f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB (CUDA {torch.version.cuda})"
        )
    else:
        lines.append("GPU: none")
    lines.append(
        f"run: device {settings.device.type}, precision {settings.precision}, augment "
        f"{settings.augment}, self-blend {settings.self_blend:g}, batch {settings.batch_size}, "
        f"workers {settings.workers}, {settings.warmup} warm-up + {settings.batches} timed batches"
    )
    return lines


def verdict(row: Row) -> str:
    if row.loader is None or row.compute is None:
        return "?"
    ratio = row.loader.rate / row.compute.rate
    return f"{'loader' if ratio < 1 else 'compute'} ({ratio:.2f}x)"


def table_lines(rows: list[Row], settings: Settings) -> list[str]:
    headers = ["model", "input", "crops px", "device", "precision", "batch", "workers",
               "loader-only/s", "model-only/s", "train/s", "bottleneck (loader/model)",
               "other CPU % L/M/T"]  # fmt: skip
    on_gpu = settings.device.type == "cuda"
    if on_gpu:
        headers += ["GPU util mean/max %", "peak alloc GiB"]
    body = []
    for row in rows:
        timings = (row.loader, row.compute, row.train)
        rates = [f"{t.rate:.1f}" if t is not None else "failed" for t in timings]
        other = "/".join(f"{t.other_cpu * 100:.0f}" if t is not None else "-" for t in timings)
        cells = [row.model, str(row.size), str(row.crop_px), settings.device.type,
                 settings.precision, str(settings.batch_size), str(settings.workers), *rates,
                 verdict(row), other]  # fmt: skip
        if on_gpu:
            util = f"{np.mean(row.util):.0f}/{max(row.util):.0f}" if row.util else "n/a"
            peak = f"{row.peak_gib:.2f}" if row.peak_gib is not None else "n/a"
            cells += [util, peak]
        body.append(cells)
    widths = [max(len(r[i]) for r in [headers, *body]) for i in range(len(headers))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip()
        for r in [headers, *body]
    ]


def legend(settings: Settings, rows: list[Row]) -> list[str]:
    lines = [
        "crops/s; bottleneck: the slower of loader-only and model-only (their ratio in brackets;"
        " below 1 the loader cannot feed the model)",
        f"crops px: stored crop side; crops larger than the input are resized by the dataset "
        f"(stage 1's default is {STAGE1_CROP}; larger inputs get crops at their own size)",
        "other CPU: share of all CPUs that processes outside this benchmark used during the "
        "loader-only / model-only / train timings",
    ]
    if settings.device.type == "cpu" and settings.workers:
        lines.append(
            "on CPU the loader workers and the model share the cores: train can be "
            "below both loader-only and model-only"
        )
    timings = [t for row in rows for t in (row.loader, row.compute, row.train) if t is not None]
    if any(t.other_cpu > BUSY_ELSEWHERE for t in timings):
        lines.append(
            f"WARNING: other processes used over {BUSY_ELSEWHERE:.0%} of the CPUs during some "
            "timings: those figures are below what this machine does when idle"
        )
    lines += [f"{row.model}: {note}" for row in rows for note in row.notes]
    return lines


# --- command line --------------------------------------------------------------------------------


def model_spec(text: str) -> tuple[str, int]:
    name, _, size = text.rpartition(":")
    if not name or not size.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME:SIZE, e.g. meso4:256, got {text!r}")
    return name, int(size)


def count(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least `minimum`."""

    def parse(text: str) -> int:
        if not text.isdigit() or int(text) < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return int(text)

    return parse


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        nargs="+",
        type=model_spec,
        metavar="NAME:SIZE",
        help="models and input sizes (default: the preset's)",
    )
    parser.add_argument(
        "--gpu",
        action="store_true",
        help="GPU preset: efficientnet_b4:380, 16-mixed, batch 32, 8 workers",
    )
    parser.add_argument("--batches", type=count(1), help="timed batches (default 8 CPU, 40 GPU)")
    parser.add_argument("--batch-size", type=count(1), help="default 16 CPU, 32 GPU")
    parser.add_argument("--workers", type=count(0), help="loader processes (default 2 CPU, 8 GPU)")
    parser.add_argument("--augment", choices=AUGMENTATIONS, default="strong")
    parser.add_argument(
        "--self-blend",
        type=float,
        default=0.0,
        help="share of self-blended pseudo-fakes in each batch",
    )
    parser.add_argument(
        "--threads",
        type=count(1),
        default=torch.get_num_threads(),
        help="torch threads of the main process",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="where the synthetic crops go (kept and reused; default: temporary)",
    )
    args = parser.parse_args()
    if not 0 <= args.self_blend < 1:
        parser.error("--self-blend must be in [0, 1)")
    args.gpu = args.gpu or (args.models is None and torch.cuda.is_available())
    if args.gpu and not torch.cuda.is_available():
        parser.error("--gpu: torch sees no CUDA device here")
    return args


def model_config(name: str, size: int) -> ModelConfig:
    """The model's input config; an unknown name stops the run before any data is made."""
    try:
        return create_model(name, image_size=size)[1]
    except ModelError as error:
        raise SystemExit(f"error: {error}") from None


def run(args: argparse.Namespace, workdir: Path) -> None:
    preset = GPU if args.gpu else CPU
    settings = Settings(
        device=torch.device("cuda" if args.gpu else "cpu"),
        batch_size=args.batch_size or preset.batch_size, batches=args.batches or preset.batches,
        workers=preset.workers if args.workers is None else args.workers, augment=args.augment,
        self_blend=args.self_blend, workdir=workdir,
    )  # fmt: skip
    print("\n".join(machine_lines(settings, args.threads)), flush=True)
    models = [model_config(name, size) for name, size in args.models or preset.models]
    folders = {}
    for crop_px in sorted({max(STAGE1_CROP, model.input_size) for model in models}):
        start = time.perf_counter()
        folders[crop_px] = make_crops_folder(
            workdir, crop_px, preset.videos, preset.crops_per_video
        )
        print(
            f"data: {preset.videos} videos x {preset.crops_per_video} crops at {crop_px} px in "
            f"{folders[crop_px]} ({time.perf_counter() - start:.1f} s)",
            flush=True,
        )
    rows = [
        bench_model(model, folders[max(STAGE1_CROP, model.input_size)], settings)
        for model in models
    ]
    print()
    print("\n".join(table_lines(rows, settings)))
    print()
    print("\n".join(legend(settings, rows)))


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    quiet_lightning()
    start = time.perf_counter()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        run(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="bench_train_") as folder:
            run(args, Path(folder))
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
