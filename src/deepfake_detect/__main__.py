"""`python -m deepfake_detect` runs the command line."""

from deepfake_detect.cli import app

app(prog_name="deepfake-detect")
