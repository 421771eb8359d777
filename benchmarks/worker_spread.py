"""How evenly `switchboard serve --workers N` spreads a burst of new connections.

Fires `--bursts` bursts of `--connections` simultaneous new connections at `/health` (each worker
answers with its own node id) and prints how many each worker answered, busiest first. With one
shared listening socket the worker that wakes first accepts most of a burst; with a SO_REUSEPORT
socket per worker the kernel spreads them by hash; the supervisor now hands each to the worker
holding the fewest open connections (`app/workers.py`).

    .venv/bin/python -m benchmarks.worker_spread --workers 2
"""

import argparse
import asyncio
import collections
import tempfile
from pathlib import Path

import httpx

from tests.helpers.servers import start_server


async def burst(url: str, connections: int) -> list[int]:
    async def node_id() -> str:
        async with httpx.AsyncClient(timeout=30) as client:  # a new connection each
            return (await client.get(f"{url}/health")).json()["node_id"]

    ids = await asyncio.gather(*(node_id() for _ in range(connections)))
    return sorted(collections.Counter(ids).values(), reverse=True)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=40)
    parser.add_argument("--bursts", type=int, default=5)
    args = parser.parse_args()
    server = start_server(
        Path(tempfile.mkdtemp(prefix="switchboard-spread-")), workers=args.workers, preload=[]
    )
    try:
        splits = []
        for _ in range(args.bursts):
            split = await burst(server.url, args.connections)
            splits.append(split + [0] * (args.workers - len(split)))
            await asyncio.sleep(1)
    finally:
        server.stop()
    busiest = sum(s[0] for s in splits) / (args.bursts * args.connections)
    print(f"bursts of {args.connections} connections, answers per worker: {splits}")
    print(f"the busiest worker took {busiest:.0%} (even: {1 / args.workers:.0%})")


if __name__ == "__main__":
    asyncio.run(main())
