"""`deepfake-detect serve`: a local web page and REST API over stage 3's Predictor and report.

The model is loaded once and shared by a small thread pool (torch releases the GIL). An upload
is streamed to a private folder under a generated name, checked by decoding it, judged by
`Predictor.predict` and written up by `report.write_report`, exactly as `predict --json
--report` would; the upload is deleted when its job ends, the job and its report after a
retention time. At most `queue` jobs wait or run at once; past that the API answers 429.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import secrets
import shutil
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, BinaryIO, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deepfake_detect import __version__
from deepfake_detect.inference import FrameScore, PersonScore, Predictor, VideoPrediction
from deepfake_detect.report import write_report
from deepfake_detect.segments import Segment
from deepfake_detect.video import VideoError, probe

JobState = Literal["queued", "running", "done", "failed"]
REPORT_FILE = "report.html"
UPLOAD_FILE = "upload"
CHUNK_BYTES = 1 << 20
# Multipart framing (boundaries, part headers, the file name) on top of the file itself.
MULTIPART_SLACK_BYTES = 64 << 10
RETRY_AFTER_S = 5
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


class ServeError(ValueError):
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
        self.slots = threading.BoundedSemaphore(queue)
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()

    def reserve(self) -> None:
        """Take a place in the queue before the upload is read, or refuse with 429."""
        if not self.slots.acquire(blocking=False):
            raise HTTPException(
                429, "the server is busy: too many videos queued; try again shortly",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )  # fmt: skip

    def release(self) -> None:
        self.slots.release()

    def add(self, source: BinaryIO, client_name: str | None) -> Job:
        """Save an upload under a generated name, check that it decodes, and queue it.

        The place `reserve` took passes to the queued job, which gives it back when it ends;
        when the upload is refused (413, 415) the caller still holds it.
        """
        job_id = uuid.uuid4().hex
        job = Job(job_id, display_name(client_name), self.folder / job_id, datetime.now(UTC))
        try:
            job.folder.mkdir(mode=0o700)
            self._save(source, job.upload)
            self._check_video(job)
        except BaseException:
            shutil.rmtree(job.folder, ignore_errors=True)
            raise
        with self.lock:
            self.jobs[job.id] = job
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
        """Refuse what does not decode as a video (text, empty, no video stream): 415."""
        try:
            probe(job.upload)
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
            self.release()
        with self.lock:
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
            return JobStatus(id=job.id, state=job.state, submitted=job.submitted,
                             finished=job.finished, error=job.error,
                             result=job.result)  # fmt: skip

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


def _public(message: str, job: Job) -> str:
    """A message with the server's temporary path replaced by the client's file name."""
    return message.replace(str(job.upload), job.name)


def _for_display(prediction: VideoPrediction, job: Job) -> VideoPrediction:
    return replace(prediction, path=job.name, error=_public(prediction.error, job))


def too_large(max_bytes: int) -> str:
    return f"the upload is larger than the {max_bytes / 1e6:g} MB limit"


class BodyLimit:
    """ASGI middleware refusing request bodies over `max_bytes` with a 413 that says the limit:
    at once when Content-Length is over, else as soon as the streamed bytes pass it.

    (Starlette's RequestBodyLimitMiddleware answers a bare "Content Too Large" instead.)
    """

    def __init__(self, app: ASGIApp, max_bytes: int, message: str) -> None:
        self.app, self.max_bytes, self.message = app, max_bytes, message

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            refusal = JSONResponse({"detail": self.message}, status_code=413)
            return await refusal(scope, receive, send)
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, self.message)
            return message

        await self.app(scope, limited_receive, send)


def create_app(
    predictor: Predictor,
    *,
    workers: int = 1,
    queue: int = 16,
    max_upload_mb: float = 200,
    token: str | None = None,
    retention_s: float = 3600,
    work_dir: Path | None = None,
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
    """
    for name, value in {"workers": workers, "queue": queue, "max_upload_mb": max_upload_mb,
                        "retention_s": retention_s}.items():  # fmt: skip
        if value <= 0:
            raise ServeError(f"{name} must be positive, got {value}")
    if token is not None and not token.strip():
        raise ServeError("--token must not be empty")
    max_bytes = int(max_upload_mb * 1e6)
    store = JobStore(
        predictor, Path(tempfile.mkdtemp(prefix="deepfake-detect-", dir=work_dir)),
        workers=workers, queue=queue, retention_s=retention_s, max_upload_bytes=max_bytes,
    )  # fmt: skip

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
        summary="Upload a video of a face; get a REAL / FAKE verdict and an HTML report.",
        lifespan=lifespan,
        # Swagger UI and ReDoc load scripts from a CDN; a local server offers the schema only.
        docs_url=None,
        redoc_url=None,
    )
    app.add_middleware(BodyLimit, max_bytes=max_bytes + MULTIPART_SLACK_BYTES,
                       message=too_large(max_bytes))  # fmt: skip

    page = files("deepfake_detect").joinpath("static", "index.html").read_text(encoding="utf-8")

    @app.get("/", include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_POLICY})

    @app.get("/healthz")
    def healthz() -> Health:
        """Liveness, the model's name and input size, and the upload limit (no token needed)."""
        model = predictor.artifact.model
        return Health(status="ok", model=model.name, input_size=model.input_size,
                      version=__version__, token_required=token is not None,
                      max_upload_mb=max_upload_mb)  # fmt: skip

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
            raise HTTPException(401, "a valid bearer token is required",
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip

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
        responses=errors | {
            413: {"description": "The upload is larger than the server's limit."},
            415: {"description": "The file does not decode as a video (or is empty)."},
            422: {"description": "No file field named `file` in the form."},
            429: {"description": "Too many jobs queued; retry after `Retry-After` seconds."},
        },
    )  # fmt: skip
    async def create_job(request: Request, response: Response) -> JobStatus:
        """Upload a video (multipart field `file`); returns the queued job and its id."""
        store.reserve()
        queued = False
        try:
            async with request.form(max_files=1, max_fields=8) as form:
                upload = form.get("file")
                if not isinstance(upload, UploadFile):
                    raise HTTPException(422, "send the video as a multipart file field `file`")
                job = await run_in_threadpool(store.add, upload.file, upload.filename)
                queued = True
        finally:
            if not queued:
                store.release()
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
    )  # fmt: skip
    def get_report(job_id: str) -> FileResponse:
        """The job's self-contained HTML report (timeline, suspicious faces, Grad-CAM)."""
        job = store.get(job_id)
        if job.state != "done":
            raise HTTPException(409, f"job is {job.state}; a report exists once it is done")
        return FileResponse(job.report, media_type="text/html",
                            headers={"Content-Security-Policy": REPORT_POLICY})  # fmt: skip

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


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
) -> None:
    """Load the model once and serve the page and API with uvicorn until interrupted.

    Raises:
        ServeError: a non-loopback host without a token, or a bad limit.
        PredictError, ArtifactError: the model cannot be loaded.
    """
    import uvicorn

    check_listen_address(host, token)
    predictor = Predictor(Path(model), device=device)
    app = create_app(predictor, workers=workers, queue=queue, max_upload_mb=max_upload_mb,
                     token=token, retention_s=retention_s)  # fmt: skip
    # Torch and the model are half a million objects that every full collection would walk
    # again (see JobStore._run); frozen, a collection after each job takes milliseconds.
    gc.freeze()
    uvicorn.run(app, host=host, port=port)
