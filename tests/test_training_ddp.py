"""Training on many devices (issue 16): DDP through Lightning, here two CPU processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from media import crops_folder
from safetensors.torch import load_file

from deepfake_detect.training import TrainConfig, read_history, run_training
from deepfake_detect.training_data import EpochSampler

pytestmark = pytest.mark.slow  # `pytest -m "not slow"` leaves it out; `make test` runs it

# Runs the CLI with the sampler and the validation metrics recording what each rank saw.
# Lightning starts rank 1 by running this same script again, so it records too.
RECORDING_CLI = """
import os
from pathlib import Path

from deepfake_detect import training, training_data
from deepfake_detect.cli import app

record = Path(os.environ["RECORD_DIR"])
rank = os.environ.get("LOCAL_RANK", "0")
sampler_iter, metrics = training_data.EpochSampler.__iter__, training.epoch_metrics


def recording_iter(self):
    keys = list(sampler_iter(self))
    (record / f"train-rank{self.rank}-epoch{self.epoch}").write_text(
        " ".join(str(k.video) for k in keys)
    )
    yield from keys


def recording_metrics(labels, logits, videos):
    seen = sorted(set(videos.video_ids))
    (record / f"val-rank{rank}").write_text(" ".join(str(v) for v in seen))
    return metrics(labels, logits, videos)


training_data.EpochSampler.__iter__ = recording_iter
training.epoch_metrics = recording_metrics
app()
"""
TINY = ["--batch-size", "8", "--image-size", "64", "--crops-per-video", "4",
        "--val-crops-per-video", "4", "--augment", "none", "--quiet"]  # fmt: skip


def test_distributed_sampler_deals_disjoint_balanced_shares():
    labels = np.array([0] * 6 + [1] * 3)
    for epoch in (0, 1):
        shares = []
        for rank in (0, 1):
            sampler = EpochSampler(labels, np.full(9, 5), crops_per_video=2, self_blend=0.2,
                                   seed=3, num_replicas=2, rank=rank)  # fmt: skip
            sampler.set_epoch(epoch)
            keys = list(sampler)
            assert len(keys) == len(sampler) == 12 + 3  # 3 videos a class x 2 crops, 3 blends
            base = [k for k in keys if not k.blend]
            assert sum(labels[k.video] for k in base) == len(base) // 2  # balanced on each rank
            assert keys == list(sampler)
            shares.append({k.video for k in keys})
        assert not shares[0] & shares[1]  # distinct videos, blends' sources included
        assert shares[0] | shares[1] == set(range(9))
    one = EpochSampler(labels, np.full(9, 5), crops_per_video=2, seed=3)
    assert len(one) == 2 * 6 * 2  # one process: the whole epoch, as before


@pytest.mark.timeout(240)
def test_ddp_on_two_cpu_processes_shards_gathers_writes_once_and_resumes(tmp_path):
    data = crops_folder(tmp_path / "crops", {"train": [0, 1] * 6, "val": [0, 1] * 4}, crops=4)
    script = tmp_path / "recording_cli.py"
    script.write_text(RECORDING_CLI)
    record = tmp_path / "record"
    record.mkdir()
    out = tmp_path / "ddp"
    env = os.environ | {"RECORD_DIR": str(record)}
    ddp = ["--train", str(data), "--output-dir", str(out), "--accelerator", "cpu",
           "--devices", "2", "--strategy", "ddp", *TINY]  # fmt: skip
    command = [sys.executable, str(script), "train", *ddp]
    subprocess.run([*command, "--max-epochs", "2"], check=True, env=env, timeout=200)
    for epoch in (0, 1):
        drawn = [set((record / f"train-rank{r}-epoch{epoch}").read_text().split()) for r in (0, 1)]
        assert drawn[0] and drawn[1] and not drawn[0] & drawn[1], "ranks drew the same videos"
    val = [(record / f"val-rank{r}").read_text().split() for r in (0, 1)]
    assert val[0] == val[1] == [str(v) for v in range(8)]  # metrics over every rank's videos

    single = run_training(TrainConfig(
        train=data, output_dir=tmp_path / "single", max_epochs=1, batch_size=8, image_size=64,
        crops_per_video=4, val_crops_per_video=4, augment="none", progress=False,
    ))  # fmt: skip
    ddp_json = json.loads((out / "model" / "model.json").read_text())
    single_json = json.loads((single.artifact_dir / "model.json").read_text())
    assert ddp_json.keys() == single_json.keys()
    assert ddp_json["metrics"]["val"].keys() == single_json["metrics"]["val"].keys()
    ddp_weights = load_file(out / "model" / "model.safetensors")
    single_weights = load_file(single.artifact_dir / "model.safetensors")
    assert {k: v.shape for k, v in ddp_weights.items()} == {
        k: v.shape for k, v in single_weights.items()
    }
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert list(read_history(out).epoch) == [0, 1]
    assert len((out / "history.csv").read_text().splitlines()) == 3  # written once per epoch

    subprocess.run([*command, "--max-epochs", "3", "--resume-checkpoint", "last"], check=True,
                   env=env, timeout=200)  # fmt: skip
    assert list(read_history(out).epoch) == [0, 1, 2]
    assert (record / "train-rank1-epoch2").exists()
    assert not (record / "train-rank0-epoch3").exists()
    assert json.loads((out / "model" / "model.json").read_text())["training"]["max_epochs"] == 3


def test_devices_and_num_nodes_reach_the_trainer(tmp_path):
    from deepfake_detect.training import build_trainer

    config = TrainConfig(train=Path("x"), output_dir=tmp_path, accelerator="cpu", devices="1",
                         num_nodes=1, progress=False)  # fmt: skip
    trainer = build_trainer(config)
    assert trainer.num_nodes == 1 and trainer.num_devices == 1


def test_fewer_validation_videos_than_ranks_is_refused(tmp_path):
    from deepfake_detect.models import create_model
    from deepfake_detect.training import CropDataModule, TrainError, load_tables

    data = crops_folder(tmp_path / "crops", {"train": [0, 1], "val": [1]}, crops=2)
    config = TrainConfig(train=data, output_dir=tmp_path / "run", progress=False)
    train, val, _ = load_tables(config)
    module = CropDataModule(train, val, create_model("meso4", image_size=64)[1], config)
    assert len(module.full_val_dataloader().sampler) == 2  # one process: every crop
    with pytest.raises(TrainError, match="1 videos, fewer than the 2 DDP ranks"):
        module._val_loader(2, 1)
