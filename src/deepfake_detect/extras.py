"""Optional parts of the package (pip extras) and the one-line error when one is missing.

The core (preprocess, train, predict with torch) needs none of them; `serve`, ONNX export and
inference, and Ray each need their extra, installed with `pip install 'deepfake-detect[NAME]'`.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from deepfake_detect.errors import DeepfakeDetectError

# extra -> the modules it provides (import names, not distribution names)
EXTRAS: dict[str, tuple[str, ...]] = {
    "serve": ("fastapi", "uvicorn", "multipart"),
    "onnx": ("onnx", "onnxscript", "onnxruntime"),
    "ray": ("ray",),
}


class MissingExtraError(DeepfakeDetectError, ValueError):
    """A feature whose optional packages are not installed; says which extra to install."""


def require_extra(extra: str, feature: str) -> None:
    """Raise MissingExtraError naming the extra unless all of its modules can be imported."""
    missing = [name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtraError(
            f"{feature} needs the [{extra}] extra (missing: {', '.join(missing)}); "
            f"install it with: pip install 'deepfake-detect[{extra}]'"
        )


def import_extra(module: str, extra: str, feature: str) -> ModuleType:
    """Import one module of an extra, or raise MissingExtraError naming the extra."""
    require_extra(extra, feature)
    return importlib.import_module(module)
