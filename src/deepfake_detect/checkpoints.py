"""Read published checkpoints without running any code they hold.

A `.safetensors` file is read as such; anything else goes through
`torch.load(weights_only=True)`, whose unpickler builds only tensors, containers and plain
values. Numpy scalars and dtypes are allowed too: training scripts of 2020 saved scores such
as `bce_best` as numpy floats, and rebuilding one runs no code. A file that needs anything
more is refused with one line saying what it holds.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from deepfake_detect.errors import DeepfakeDetectError

_SCALAR = np._core.multiarray.scalar
# numpy 1.x pickled its scalars under numpy.core, numpy 2 under numpy._core.
SAFE_NUMPY_GLOBALS = [
    _SCALAR,
    (_SCALAR, "numpy.core.multiarray.scalar"),
    np.dtype,
    *(type(np.dtype(kind)) for kind in (np.float16, np.float32, np.float64, np.int32, np.int64)),
    type(np.dtype(np.bool_)),
]
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


class CheckpointError(DeepfakeDetectError):
    """A checkpoint that cannot be read safely; one line naming the file and the reason."""


def read_checkpoint(path: Path) -> Any:
    """The object a checkpoint file holds (a state dict, or a dict around one), on the CPU.

    Raises:
        CheckpointError: absent, not a checkpoint, or one that needs full unpickling (refused:
            unpickling can run arbitrary code).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from None
    try:
        with torch.serialization.safe_globals(SAFE_NUMPY_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = _UNSUPPORTED_GLOBAL.search(str(error))
        holds = f"it holds {found.group(1)}" if found else "it holds more than tensors"
        raise CheckpointError(
            f"{path}: refused: loading it needs full unpickling ({holds}), which can run "
            "arbitrary code; ask its authors for a safetensors or weights-only file"
        ) from None
    except Exception as error:  # untrusted bytes: the unpickler can fail in any way
        first = str(error).strip().split("\n")[0].split(". ")[0]
        detail = f"{type(error).__name__}: {first}" if first else type(error).__name__
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({detail})") from None
