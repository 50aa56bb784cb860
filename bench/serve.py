"""Load test of `deepfake-detect serve` on loopback (issue 7): a burst of uploads against a
small queue.

Starts the server in its own process (1 worker, queue 4, an untrained meso4 artifact), then
fires rounds of 20 simultaneous uploads of a 1 s synthetic face clip. Checks that the server
never crashes, that every accepted job finishes, that the rest get 429 with Retry-After,
that uploads are deleted after their jobs, and that the server's memory stays flat from one
round to the next. Prints the figures and PASS/FAIL.

    .venv/bin/python bench/serve.py [--uploads 20] [--queue 4] [--rounds 3] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
from _common import untrained_artifact

from deepfake_detect.crops import CropConfig
from deepfake_detect.synth import Motion, packaged_faces, write_camera_clip

SERVER = (
    "import sys; from pathlib import Path; from deepfake_detect.serve import serve; "
    "serve(Path(sys.argv[1]), port=int(sys.argv[2]), workers=1, queue=int(sys.argv[3]))"
)
START_TIMEOUT_S = 120
JOB_TIMEOUT_S = 300
MAX_GROWTH_MB = 20.0  # RSS growth from the first round to the last that still counts as flat


@dataclass
class Upload:
    """One client's upload: the answer and, when accepted, how the job ended."""

    status: int
    seconds: float
    job_id: str | None = None
    retry_after: str | None = None
    state: str | None = None
    job_seconds: float | None = None


def tiny_artifact(directory: Path) -> Path:
    """An untrained meso4 at 64 px: the cheapest model the server accepts."""
    crops = CropConfig(crop_size=64, frames_per_video=8)
    return untrained_artifact(directory, "meso4", crops, image_size=64)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model: Path, queue: int, workdir: Path) -> tuple[subprocess.Popen, str]:
    """The server in its own process (its temporary files under workdir), once it answers."""
    port = free_port()
    log = (workdir / "server.log").open("w")
    env = os.environ | {"TMPDIR": str(workdir)}
    command = [sys.executable, "-c", SERVER, str(model), str(port), str(queue)]
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited with {server.returncode}; see {log.name}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return server, url
        except httpx.TransportError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError(f"server did not answer within {START_TIMEOUT_S} s")


def upload(url: str, clip: Path, start: threading.Barrier) -> Upload:
    """Wait for every client, upload, and follow an accepted job until it ends."""
    with httpx.Client(base_url=url, timeout=60) as client:
        start.wait()
        began = time.perf_counter()
        response = client.post("/api/jobs", files={"file": (clip.name, clip.read_bytes())})
        result = Upload(response.status_code, time.perf_counter() - began,
                        retry_after=response.headers.get("retry-after"))  # fmt: skip
        if response.status_code != 202:
            return result
        result.job_id = response.json()["id"]
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while time.monotonic() < deadline:
            state = client.get(f"/api/jobs/{result.job_id}").json()["state"]
            if state in {"done", "failed"}:
                result.state, result.job_seconds = state, time.perf_counter() - began
                break
            time.sleep(0.1)
        return result


def burst(url: str, clip: Path, uploads: int) -> list[Upload]:
    start = threading.Barrier(uploads)
    with ThreadPoolExecutor(uploads) as pool:
        return list(pool.map(lambda _: upload(url, clip, start), range(uploads)))


def rss_mb(server: subprocess.Popen) -> float:
    return psutil.Process(server.pid).memory_info().rss / 1e6


def summary(results: list[Upload]) -> str:
    accepted = [r for r in results if r.status == 202]
    busy = [r for r in results if r.status == 429]
    jobs = [r.job_seconds for r in accepted if r.job_seconds is not None]
    return (
        f"{len(accepted)} accepted ({sum(r.state == 'done' for r in accepted)} done), "
        f"{len(busy)} x 429, {len(results) - len(accepted) - len(busy)} other; "
        f"answer p50 {statistics.median(r.seconds for r in results) * 1e3:.0f} ms, "
        f"max {max(r.seconds for r in results) * 1e3:.0f} ms; "
        f"accepted job end to end mean {statistics.fmean(jobs or [0]):.2f} s, "
        f"max {max(jobs or [0]):.2f} s"
    )


def verdict(name: str, ok: bool, detail: str) -> bool:
    print(f"  {'PASS' if ok else 'FAIL'}  {name}: {detail}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=20)
    parser.add_argument("--queue", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-serve-", dir=args.workdir))
    model = tiny_artifact(workdir / "model")
    motion = Motion(shift=0.02, zoom=0.04, roll_degrees=2, light=0.05, noise=1.0)
    clip = write_camera_clip(packaged_faces()["grace_hopper"], workdir / "clip.mp4",
                             (192, 192), 10, 1.0, 0, motion)  # fmt: skip
    server, url = start_server(model, args.queue, workdir)
    try:
        print(f"server pid {server.pid} at {url}: 1 worker, queue {args.queue}; "
              f"clip {clip.stat().st_size / 1e3:.0f} kB; {os.cpu_count()} CPUs")  # fmt: skip
        burst(url, clip, 1)  # warm-up: the first job loads the face detector
        memory = [rss_mb(server)]
        print(f"RSS after warm-up: {memory[0]:.0f} MB")
        rounds = []
        for number in range(1, args.rounds + 1):
            results = burst(url, clip, args.uploads)
            rounds.append(results)
            memory.append(rss_mb(server))
            print(f"round {number}: {summary(results)}; RSS {memory[-1]:.0f} MB")
        uploads_left = list(workdir.glob("deepfake-detect-*/*/upload"))
        alive = server.poll() is None and httpx.get(f"{url}/healthz").status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=60)
    every = [r for results in rounds for r in results]
    accepted = [r for r in every if r.status == 202]
    refused = [r for r in every if r.status != 202]
    growth = memory[-1] - memory[1]
    checks = [
        verdict("no crash", alive, "server alive and healthy after every round"),
        verdict("every accepted job finishes", all(r.state == "done" for r in accepted),
                f"{sum(r.state == 'done' for r in accepted)}/{len(accepted)} done"),
        verdict("the others get 429 + Retry-After",
                all(r.status == 429 and r.retry_after for r in refused),
                f"{len(refused)} refused, statuses {sorted({r.status for r in refused})}"),
        verdict("uploads deleted", not uploads_left, f"{len(uploads_left)} upload files left"),
        verdict("memory flat", growth <= MAX_GROWTH_MB,
                f"RSS {' -> '.join(f'{m:.0f}' for m in memory)} MB; round 1 to "
                f"{args.rounds}: {growth:+.1f} MB (limit {MAX_GROWTH_MB:.0f})"),
    ]  # fmt: skip
    shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(0 if all(checks) else 1)


if __name__ == "__main__":
    main()
