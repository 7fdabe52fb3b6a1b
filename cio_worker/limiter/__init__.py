"""What may be sent now: the fleet's rate limiter and circuit breaker, one per API family."""

from __future__ import annotations

from cio_worker.limiter._circuit import (
    BUCKETS,
    Circuit,
    Gate,
    Health,
)
from cio_worker.limiter._limiter import Limiter, bucket_rates

__all__ = [
    "BUCKETS",
    "Circuit",
    "Gate",
    "Health",
    "Limiter",
    "bucket_rates",
]
