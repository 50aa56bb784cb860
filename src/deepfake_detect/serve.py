"""`deepfake-detect serve`: a local web page and REST API over stage 3's Predictor and report.

The model is loaded once and shared by a small thread pool (torch releases the GIL). An upload
is streamed to a private folder under a generated name, checked by decoding it, judged by
`Predictor.predict` and written up by `report.write_report`, exactly as `predict --json
--report` would; the upload is deleted when its job ends, the job and its report after a
retention time. At most `queue` jobs wait or run at once; past that the API answers 429.

No peer can hold the server: a job's place in the queue is taken only once its upload is on
disk, a connection must send its request head within a header timeout and its body at a
floor rate within an upload timeout, and connections are capped. Requests must name this
server in `Host` (against DNS rebinding) and may not change state from another origin.
"""

from __future__ import annotations

import asyncio
import gc
import re
import secrets
import shutil
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, BinaryIO, Literal

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from deepfake_detect import __version__
from deepfake_detect.errors import DeepfakeDetectError
from deepfake_detect.http_guards import (
    HEADER_TIMEOUT_S,
    MAX_CONNECTIONS,
    UPLOAD_TIMEOUT_S,
    SameOriginOnly,
    UploadGuard,
    host_names,
    is_loopback,
    server_config,
)
from deepfake_detect.inference import FrameScore, PersonScore, Predictor, VideoPrediction
from deepfake_detect.report import write_report
from deepfake_detect.segments import Segment
from deepfake_detect.video import VideoError, check_video

JobState = Literal["queued", "running", "done", "failed"]
REPORT_FILE = "report.html"
UPLOAD_FILE = "upload"
CHUNK_BYTES = 1 << 20
# Multipart framing (boundaries, part headers, the file name) on top of the file itself.
MULTIPART_SLACK_BYTES = 64 << 10
RETRY_AFTER_S = 5
# An absolute path inside a message (not a ratio such as 8/8): cut from what a client sees.
SERVER_PATH = re.compile(r"(?<![\w.])/[^\s'\"(),;]+")
BEARER = HTTPBearer(auto_error=False)
# The page runs its own inline script; the report runs none and loads nothing.
PAGE_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data:; connect-src 'self'; frame-src 'self'; base-uri 'none'; form-action 'none'"
)
REPORT_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"}},
            }
        }
    },
}


class ServeError(DeepfakeDetectError, ValueError):
    """Bad serve options (an exposed address without a token, a bad limit); one clear line."""


class Health(BaseModel):
    """GET /healthz: the server is up, and which model it judges with."""

    status: Literal["ok"]
    model: str
    input_size: int
    version: str
    token_required: bool
    max_upload_mb: float


class VideoResult(BaseModel):
    """One entry of `predict --json --per-frame`'s "videos"; `path` is the uploaded file's name."""

    path: str
    status: str
    error: str
    probability: float | None
    verdict: str | None
    summary: str
    threshold: float
    aggregation: str
    uncertain_band: tuple[float, float] | None = None
    persons: list[PersonScore]
    segments: list[Segment]
    frames: list[FrameScore]
    sample_times: list[float]
    video: dict[str, int | float]
    timings: dict[str, float]


class JobStatus(BaseModel):
    """GET /api/jobs/{id}: where a job is; once done, its result (failed: `error` says why)."""

    id: str
    state: JobState
    submitted: datetime
    finished: datetime | None
    error: str
    result: VideoResult | None


@dataclass
class Job:
    """One uploaded video on its way through the pool; its files live in `folder`."""

    id: str
    name: str
    folder: Path
    submitted: datetime
    state: JobState = "queued"
    finished: datetime | None = None
    error: str = ""
    result: dict[str, Any] | None = None

    @property
    def upload(self) -> Path:
        return self.folder / UPLOAD_FILE

    @property
    def report(self) -> Path:
        return self.folder / REPORT_FILE


class JobStore:
    """Jobs by id, a bounded pool that runs them, and the private folder holding their files.

    Args:
        predictor: the loaded model, shared by the pool's threads.
        folder: private (0700) folder for uploads and reports; removed by `close`.
        workers: jobs run at once.
        queue: jobs waiting or running at once; one more is turned away (429).
        retention_s: a finished job and its report are deleted this long after it ends.
        max_upload_bytes: larger uploads are refused (413).

    A job takes its place in the queue only once its upload is on disk and decodes, so a
    client that uploads slowly holds no place.
    """

    def __init__(
        self,
        predictor: Predictor,
        folder: Path,
        *,
        workers: int,
        queue: int,
        retention_s: float,
        max_upload_bytes: int,
    ) -> None:
        self.predictor, self.folder = predictor, folder
        self.retention = timedelta(seconds=retention_s)
        self.max_upload_bytes = max_upload_bytes
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="deepfake-detect-job")
        self.queue, self.queued = queue, 0
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()

    def refuse_if_full(self) -> None:
        """429 at once while the queue is full, before a body is read for nothing."""
        with self.lock:
            full = self.queued >= self.queue
        if full:
            raise busy()

    def add(self, source: BinaryIO, client_name: str | None) -> Job:
        """Save an upload under a generated name, check that it decodes, take a place in the
        queue (429 when there is none) and queue it; the job gives its place back when it ends.
        """
        job_id = uuid.uuid4().hex
        job = Job(job_id, display_name(client_name), self.folder / job_id, datetime.now(UTC))
        try:
            job.folder.mkdir(mode=0o700)
            self._save(source, job.upload)
            self._check_video(job)
            with self.lock:
                if self.queued >= self.queue:
                    raise busy()
                self.queued += 1
                self.jobs[job.id] = job
        except BaseException:
            shutil.rmtree(job.folder, ignore_errors=True)
            raise
        self.pool.submit(self._run, job)
        return job

    def _save(self, source: BinaryIO, target: Path) -> None:
        size = 0
        with target.open("xb") as sink:
            while chunk := source.read(CHUNK_BYTES):
                size += len(chunk)
                if size > self.max_upload_bytes:
                    raise HTTPException(413, too_large(self.max_upload_bytes))
                sink.write(chunk)

    def _check_video(self, job: Job) -> None:
        """Refuse what does not decode as a video (text, empty, no video stream, a still
        image): 415."""
        try:
            check_video(job.upload)
        except VideoError as error:
            raise HTTPException(415, _public(str(error), job)) from None

    def _run(self, job: Job) -> None:
        """Judge the video and write its report; never raises (a failed job says why)."""
        with self.lock:
            job.state = "running"
        result, error = None, ""
        try:
            prediction = self.predictor.predict(job.upload, keep_crops=True)
            prediction = _for_display(prediction, job)
            write_report([prediction], self.predictor, job.report)
            result = prediction.to_dict(per_frame=True)
        except Exception as failure:  # the server outlives any one job
            error = _public(f"{job.name}: {failure}", job)
        finally:
            job.upload.unlink(missing_ok=True)
            # A report leaves its matplotlib figures (about 2 MB of buffers) in reference
            # cycles that CPython would free only at a rare full collection: free them now.
            gc.collect()
        with self.lock:
            self.queued -= 1
            job.result, job.error = result, error
            job.finished = datetime.now(UTC)
            job.state = "failed" if error else "done"

    def get(self, job_id: str) -> Job:
        with self.lock:
            job = self.jobs.get(job_id)
        if job is None:
            raise HTTPException(404, "no such job: unknown, or deleted after its retention time")
        return job

    def status(self, job: Job) -> JobStatus:
        with self.lock:
            return JobStatus(
                id=job.id,
                state=job.state,
                submitted=job.submitted,
                finished=job.finished,
                error=job.error,
                result=job.result,
            )

    def sweep(self) -> None:
        """Delete the jobs, and their files, that ended more than the retention time ago."""
        cutoff = datetime.now(UTC) - self.retention
        with self.lock:
            expired = [j for j in self.jobs.values() if j.finished and j.finished <= cutoff]
            for job in expired:
                del self.jobs[job.id]
        for job in expired:
            shutil.rmtree(job.folder, ignore_errors=True)

    def close(self) -> None:
        """Cancel waiting jobs, let running ones end, and remove every file."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.folder, ignore_errors=True)


def display_name(client_name: str | None) -> str:
    """The last part of the client's file name, for display only (never used as a path)."""
    name = PurePosixPath((client_name or "").replace("\\", "/")).name
    printable = "".join(c for c in name if c.isprintable())[:200]
    return printable if printable.strip(". ") else "upload"


def busy() -> HTTPException:
    return HTTPException(
        429,
        "the server is busy: too many videos queued; try again shortly",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def _public(message: str, job: Job) -> str:
    """A message fit for the client: the upload's temporary path becomes the client's file
    name, and any other server path (a temporary file, the model's folder) is cut out."""
    return SERVER_PATH.sub("<server path>", message.replace(str(job.upload), job.name))


def _for_display(prediction: VideoPrediction, job: Job) -> VideoPrediction:
    return replace(prediction, path=job.name, error=_public(prediction.error, job))


def too_large(max_bytes: int) -> str:
    return f"the upload is larger than the {max_bytes / 1e6:g} MB limit"


def create_app(
    predictor: Predictor,
    *,
    workers: int = 1,
    queue: int = 16,
    max_upload_mb: float = 200,
    token: str | None = None,
    retention_s: float = 3600,
    work_dir: Path | None = None,
    host: str = "127.0.0.1",
    allowed_hosts: Sequence[str] = (),
    upload_timeout_s: float = UPLOAD_TIMEOUT_S,
    header_timeout_s: float = HEADER_TIMEOUT_S,
) -> FastAPI:
    """The web app: the page at /, the REST API under /api, /healthz and /openapi.json.

    Args:
        predictor: the loaded model, shared by all jobs.
        workers: videos judged at once.
        queue: videos waiting or being judged at once; past that, 429 with Retry-After.
        max_upload_mb: larger uploads get 413.
        token: when set, every /api call needs `Authorization: Bearer <token>`.
        retention_s: finished jobs and their reports are deleted this long after they end.
        work_dir: where the private temporary folder is made (default: the system's).
        host: the address the server listens on; `Host` headers must name it (see
            `host_names`) or one of `allowed_hosts`.
        allowed_hosts: more names the server answers to (e.g. the machine's DNS name).
        upload_timeout_s: an upload's body must end this long after its request began (408).
        header_timeout_s: the grace before the body's floor rate applies (the same time the
            server gives a request head, see `server_config`).
    """
    for name, value in {
        "workers": workers,
        "queue": queue,
        "max_upload_mb": max_upload_mb,
        "retention_s": retention_s,
        "upload_timeout_s": upload_timeout_s,
        "header_timeout_s": header_timeout_s,
    }.items():
        if value <= 0:
            raise ServeError(f"{name} must be positive, got {value}")
    if token is not None and not token.strip():
        raise ServeError("--token must not be empty")
    max_bytes = int(max_upload_mb * 1e6)
    store = JobStore(
        predictor,
        Path(tempfile.mkdtemp(prefix="deepfake-detect-", dir=work_dir)),
        workers=workers,
        queue=queue,
        retention_s=retention_s,
        max_upload_bytes=max_bytes,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(_sweep_forever(store, min(60.0, retention_s / 2)))
        try:
            yield
        finally:
            sweeper.cancel()
            await run_in_threadpool(store.close)

    app = FastAPI(
        title="deepfake-detect",
        version=__version__,
        summary="Upload a video of a face; get a REAL / FAKE / UNCERTAIN verdict and an HTML "
        "report.",
        lifespan=lifespan,
        # Swagger UI and ReDoc load scripts from a CDN; a local server offers the schema only.
        docs_url=None,
        redoc_url=None,
    )
    app.add_middleware(
        UploadGuard,
        max_bytes=max_bytes + MULTIPART_SLACK_BYTES,
        message=too_large(max_bytes),
        timeout_s=upload_timeout_s,
        grace_s=header_timeout_s,
    )
    # Added last, so it runs first: a request for another host is refused before anything.
    app.add_middleware(SameOriginOnly, is_allowed_host=host_names(host, allowed_hosts))

    page = files("deepfake_detect").joinpath("static", "index.html").read_text(encoding="utf-8")

    @app.get("/", include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_POLICY})

    @app.get("/healthz")
    def healthz() -> Health:
        """Liveness, the model's name and input size, and the upload limit (no token needed)."""
        model = predictor.artifact.model
        return Health(
            status="ok",
            model=model.name,
            input_size=model.input_size,
            version=__version__,
            token_required=token is not None,
            max_upload_mb=max_upload_mb,
        )

    app.include_router(_api_router(store, token))
    return app


async def _sweep_forever(store: JobStore, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        store.sweep()


def _bearer_check(token: str) -> Callable[..., None]:
    """A dependency that accepts only `Authorization: Bearer <token>` (401 otherwise)."""

    def check(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]) -> None:
        given = credentials.credentials.encode() if credentials else None
        if given is None or not secrets.compare_digest(given, token.encode()):
            raise HTTPException(
                401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )

    return check


def _api_router(store: JobStore, token: str | None) -> APIRouter:
    dependencies = [Depends(_bearer_check(token))] if token is not None else []
    api = APIRouter(prefix="/api", dependencies=dependencies)
    errors: dict[int | str, dict[str, Any]] = {
        401: {"description": "Missing or wrong bearer token (when the server has one)."},
        404: {"description": "Unknown job, or deleted after the retention time."},
    }

    @api.post(
        "/jobs",
        status_code=202,
        openapi_extra={"requestBody": UPLOAD_BODY},
        responses=errors
        | {
            400: {"description": "`Host` does not name this server."},
            403: {"description": "A request from another origin (a page of another site)."},
            408: {"description": "The upload was too slow (under the floor rate, or too long)."},
            413: {"description": "The upload is larger than the server's limit."},
            415: {"description": "The file does not decode as a video (or is empty)."},
            422: {"description": "No file field named `file` in the form."},
            429: {"description": "Too many jobs queued; retry after `Retry-After` seconds."},
        },
    )
    async def create_job(request: Request, response: Response) -> JobStatus:
        """Upload a video (multipart field `file`); returns the queued job and its id."""
        store.refuse_if_full()
        async with request.form(max_files=1, max_fields=8) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise HTTPException(422, "send the video as a multipart file field `file`")
            job = await run_in_threadpool(store.add, upload.file, upload.filename)
        response.headers["Location"] = f"/api/jobs/{job.id}"
        return store.status(job)

    @api.get("/jobs/{job_id}", responses=errors)
    def get_job(job_id: str) -> JobStatus:
        """The job's state; once done, `result` is what `predict --json --per-frame` gives."""
        return store.status(store.get(job_id))

    @api.get(
        "/jobs/{job_id}/report",
        response_class=HTMLResponse,
        responses=errors | {409: {"description": "The job has no report (not done)."}},
    )
    def get_report(job_id: str) -> FileResponse:
        """The job's self-contained HTML report (timeline, suspicious faces, Grad-CAM)."""
        job = store.get(job_id)
        if job.state != "done":
            raise HTTPException(409, f"job is {job.state}; a report exists once it is done")
        return FileResponse(
            job.report, media_type="text/html", headers={"Content-Security-Policy": REPORT_POLICY}
        )

    return api


def check_listen_address(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without a token: anyone reaching the port could
    upload videos and read results."""
    if token is not None and not token.strip():
        raise ServeError("--token must not be empty")
    if token is None and not is_loopback(host):
        raise ServeError(
            f"refusing to listen on {host} without --token: anyone who can reach it could "
            "upload videos and read results; pass --token SECRET (clients then send "
            "'Authorization: Bearer SECRET') or keep the default --host 127.0.0.1"
        )


def serve(
    model: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    max_upload_mb: float = 200,
    queue: int = 16,
    token: str | None = None,
    retention_s: float = 3600,
    device: str = "auto",
    allowed_hosts: Sequence[str] = (),
    upload_timeout_s: float = UPLOAD_TIMEOUT_S,
    max_connections: int = MAX_CONNECTIONS,
) -> None:
    """Load the model once and serve the page and API with uvicorn until interrupted.

    Raises:
        ServeError: a non-loopback host without a token, or a bad limit.
        PredictError, ArtifactError: the model cannot be loaded.
    """
    check_listen_address(host, token)
    if max_connections < 2:
        raise ServeError(f"max_connections must be at least 2, got {max_connections}")
    header_timeout_s = min(HEADER_TIMEOUT_S, upload_timeout_s)
    predictor = Predictor(Path(model), device=device)
    app = create_app(
        predictor,
        workers=workers,
        queue=queue,
        max_upload_mb=max_upload_mb,
        token=token,
        retention_s=retention_s,
        host=host,
        allowed_hosts=allowed_hosts,
        upload_timeout_s=upload_timeout_s,
        header_timeout_s=header_timeout_s,
    )
    config = server_config(
        app, host, port, max_connections=max_connections, header_timeout_s=header_timeout_s
    )
    # Torch and the model are half a million objects that every full collection would walk
    # again (see JobStore._run); frozen, a collection after each job takes milliseconds.
    gc.freeze()
    uvicorn.Server(config).run()
