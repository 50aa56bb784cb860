"""Model registry: meso nets, timm backbones built offline, errors, Grad-CAM layer, one step."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub import constants as hub_constants
from safetensors.torch import save_file
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from deepfake_detect.models import (
    LOCAL_MODELS,
    ModelConfig,
    ModelError,
    create_model,
    gradcam_layer,
    known_models,
)

MESO_NETS = ("meso4", "mesoinception4")


@pytest.mark.parametrize("name", MESO_NETS)
@pytest.mark.parametrize("image_size", [None, 128])
def test_meso_nets_give_one_logit_per_image(name, image_size):
    model, config = create_model(name, image_size=image_size)
    size = image_size or 256
    assert config.input_size == size
    assert config.mean == config.std == (0.5, 0.5, 0.5)
    assert model(torch.rand(3, 3, size, size)).shape == (3,)


@pytest.mark.parametrize("name", MESO_NETS)
def test_meso_nets_are_small_conv_batchnorm_dropout_nets(name):
    model, _ = create_model(name, drop_rate=0.3)
    kinds = {type(module) for module in model.modules()}
    assert {nn.Conv2d, nn.BatchNorm2d, nn.Dropout} <= kinds
    assert all(m.p == 0.3 for m in model.modules() if isinstance(m, nn.Dropout))
    assert sum(p.numel() for p in model.parameters()) < 100_000


def test_mesoinception_uses_dilated_convolutions():
    model, _ = create_model("mesoinception4")
    dilations = {m.dilation for m in model.modules() if isinstance(m, nn.Conv2d)}
    assert {(2, 2), (3, 3)} <= dilations


@pytest.mark.parametrize("name", ["efficientnet_b0", "resnet18"])
def test_timm_backbones_build_offline_with_imagenet_normalisation(name):
    model, config = create_model(name, pretrained=False)
    assert config.input_size == 224
    assert config.mean == pytest.approx(IMAGENET_DEFAULT_MEAN)
    assert config.std == pytest.approx(IMAGENET_DEFAULT_STD)
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 224, 224)).shape == (2,)


def test_image_size_overrides_timm_default():
    _, config = create_model("test_resnet", image_size=96, drop_rate=0.1)
    assert (config.input_size, config.drop_rate) == (96, 0.1)


def test_config_survives_a_json_round_trip():
    _, config = create_model("meso4", image_size=128)
    assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_known_models_lists_local_names_and_timm():
    names = known_models()
    assert set(MESO_NETS) <= set(names)
    assert any("timm" in name for name in names)


def test_unknown_name_lists_known_models_and_close_matches():
    with pytest.raises(ModelError) as error:
        create_model("efficentnet_b0")
    message = str(error.value)
    assert all(name in message for name in LOCAL_MODELS)
    assert "timm.list_models('*pattern*')" in message
    assert "efficientnet_b0" in message


@pytest.fixture
def empty_offline_hub(monkeypatch, tmp_path) -> Path:
    """HF_HUB_OFFLINE=1 set after import, and an empty Hugging Face cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    return tmp_path


def test_pretrained_timm_offline_fails_fast_and_clearly(empty_offline_hub):
    offline_at_import = hub_constants.HF_HUB_OFFLINE
    start = time.monotonic()
    with pytest.raises(ModelError, match="weights for resnet18 could not be downloaded") as error:
        create_model("resnet18", pretrained=True)
    assert time.monotonic() - start < 10
    assert "--no-pretrained" in str(error.value)
    assert "\n" not in str(error.value)
    assert offline_at_import == hub_constants.HF_HUB_OFFLINE  # the call undoes offline mode


def test_pretrained_timm_offline_loads_cached_weights(empty_offline_hub):
    weights = {
        key: value.fill_(0.25) if value.is_floating_point() else value
        for key, value in timm.create_model("test_resnet").state_dict().items()
    }
    commit = "0" * 40
    repo = empty_offline_hub / "models--timm--test_resnet.r160_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file(weights, str(repo / "snapshots" / commit / "model.safetensors"))

    model, config = create_model("test_resnet", pretrained=True)
    assert config.input_size == 160
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert torch.all(first_conv.weight == 0.25)


@pytest.mark.parametrize("name", MESO_NETS)
def test_meso_nets_have_no_pretrained_weights(name):
    with pytest.raises(ModelError, match=f"{name} has no pretrained weights"):
        create_model(name, pretrained=True)


@pytest.mark.parametrize(("name", "size"), [("meso4", 64), ("efficientnet_b0", 64)])
def test_gradcam_layer_gives_a_spatial_feature_map(name, size):
    model, _ = create_model(name)
    layer = gradcam_layer(model)
    captured = []
    layer.register_forward_hook(lambda _module, _inputs, output: captured.append(output))
    model.eval()
    with torch.no_grad():
        model(torch.rand(1, 3, size, size))
    assert captured[0].ndim == 4
    if name == "meso4":
        assert isinstance(layer, nn.Conv2d)


def test_one_training_step_changes_meso4():
    torch.manual_seed(0)
    model, config = create_model("meso4", image_size=64)
    before = [p.detach().clone() for p in model.parameters()]
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    images = torch.rand(8, 3, config.input_size, config.input_size)
    labels = torch.tensor([0.0, 1.0] * 4)
    loss = nn.functional.binary_cross_entropy_with_logits(model(images), labels)
    loss.backward()
    optimiser.step()
    assert torch.isfinite(loss)
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


def test_predicting_with_a_meso_net_never_imports_timm(tiny_model):
    # timm (with torchvision and torch._dynamo) adds about 1.6 s to a command's start
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from deepfake_detect.inference import Predictor\n"
        f"Predictor(Path({str(tiny_model)!r}), device='cpu')\n"
        "assert 'timm' not in sys.modules, 'timm was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
