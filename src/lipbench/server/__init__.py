"""Web API and the ``/parallel_test`` page (``lipbench serve``).

One ``Workbench`` per server: its sequential pool (one replica with every thread) and its
parallel pool (the configured replicas) start once, at start-up; the Workbench leases each
pool to one job at a time, so no replica ever serves two jobs, whatever
``server.max_running`` is (a one-chunk parallel job renders on the sequential pool and
waits for its lease). Jobs run in worker threads behind a bounded queue (429 +
Retry-After beyond it).

Modules (each imports only those above it):
``connection`` uvicorn's h11 protocol with a deadline for a request's headers · ``view`` the
response for a finished job, a typed view derived from ``record.RunRecord`` · ``schemas``
request bodies, the error body, Stream mode's bodies · ``queue`` the bounded job queue ·
``errors`` error responses and handlers · ``phase`` whether a running job holds replicas yet
(a job cancelled before its lease frees its slot at once) · ``middleware`` Host allow-list, no-framing headers,
body limit (size and time) · ``storage`` finished jobs on disk, bounded, re-indexed on start,
never through a symbolic link · ``stream_jobs`` stream
jobs in memory and reading their files · ``state`` Workbench, queue, store, stream jobs,
warm-up, shutdown · ``runner`` one generate request · ``stream_runner`` start and watch a
stream job · ``stream_routes`` Stream mode's routes · ``app`` routes · ``launch``
``lipbench serve``.

Stream mode (``POST /api/stream/generate[_parallel]``) answers at once with a job id and an
HLS playlist URL that grows while the job renders; see ``stream_runner`` for what cancels
such a job.

Videos and audio are reached only by the opaque ids the server handed out; no
client-supplied path ever reaches the file system.
"""

from .app import create_app, static_dir, swagger_assets
from .launch import check_port, serve
from .queue import JobQueue, QueueFull
from .state import ServerState
from .storage import JobStore

__all__ = [
    "JobQueue",
    "JobStore",
    "QueueFull",
    "ServerState",
    "check_port",
    "create_app",
    "serve",
    "static_dir",
    "swagger_assets",
]
