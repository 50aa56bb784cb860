"""The one base class of the errors the project raises on purpose.

Each stage and building block has its own subclass (PredictError, ArtifactError, VideoError,
...), whose message is one line naming the file and the problem. The CLI catches this base
class once and prints that line instead of a traceback.
"""

from __future__ import annotations


class DeepfakeDetectError(Exception):
    """Bad input or options, said in one line that names the file and the problem."""
