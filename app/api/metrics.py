"""Prometheus metrics of this node (unauthenticated, like `/health`).

With several workers (`switchboard serve --workers N`) each writes its metrics to the directory
in `PROMETHEUS_MULTIPROC_DIR` and a scrape of any worker sums them all; the live-call gauge
counts live workers only.
"""

import asyncio
import os
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Gauge,
    generate_latest,
    multiprocess,
)

router = APIRouter()

ASYNCIO_TASKS = Gauge(
    "switchboard_asyncio_tasks",
    "asyncio tasks alive in a worker, as of its last scrape (a slow leak shows as growth)",
    multiprocess_mode="liveall",
)


@router.get(
    "/metrics",
    tags=["health"],
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def metrics() -> Response:
    ASYNCIO_TASKS.set(len(asyncio.all_tasks()))
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
    forget_dead_workers(Path(directory))
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, directory)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def forget_dead_workers(directory: Path) -> None:
    """Drop the live-gauge files of workers that have exited (their counters and histograms stay)."""
    pids = {
        int(path.stem.rsplit("_", 1)[-1])
        for path in directory.glob("*.db")
        if path.stem.rsplit("_", 1)[-1].isdigit()
    }
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, str(directory))
        except PermissionError:
            pass
