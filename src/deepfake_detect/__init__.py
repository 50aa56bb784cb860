"""deepfake-detect: tell whether a video of a face is real or a deepfake."""

__version__ = "0.1.0"
