"""sluice-client: Sluice's wire protocol (docs/PROTOCOL.md, version 1) for Python services."""

from .client import Enqueued, JobStatus, Sluice, TERMINAL
from .errors import (
    Conflict,
    Denied,
    InvalidJob,
    JobNotFound,
    LibraryMissing,
    NotCancellable,
    SluiceError,
    TooLarge,
    WaitTimeout,
)

__all__ = [
    "Sluice",
    "Enqueued",
    "JobStatus",
    "TERMINAL",
    "SluiceError",
    "InvalidJob",
    "TooLarge",
    "Denied",
    "LibraryMissing",
    "Conflict",
    "JobNotFound",
    "WaitTimeout",
    "NotCancellable",
]
