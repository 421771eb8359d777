"""The objects one server process shares between requests and calls."""

from dataclasses import dataclass

from app.calls.control import CallControl
from app.calls.registry import CallRegistry
from app.calls.tokens import TokenSigner
from app.limits import RateLimiter
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
    draining: bool = False
    """Set on SIGTERM: live calls go on, new ones are refused with 503."""
