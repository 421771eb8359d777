"""The objects one server process shares between requests and calls."""

from dataclasses import dataclass

from app.calls.control import CallControl
from app.calls.registry import CallRegistry
from app.calls.tokens import TokenSigner
from app.jobs import JobQueue
from app.limits import RateLimiter
from app.nodes import Node
from app.settings import Settings
from app.storage.db import Database
from pipelines.config import PipelineCatalog


@dataclass
class AppState:
    settings: Settings
    db: Database
    catalog: PipelineCatalog
    tokens: TokenSigner
    rate_limiter: RateLimiter
    login_limiter: RateLimiter
    """Failed dashboard log-ins per client IP."""
    calls: CallRegistry
    control: CallControl
    node: Node
    jobs: JobQueue
    draining: bool = False
    """Set on SIGTERM: live calls go on, new ones are refused with 503."""
