"""The people side of planexec: an HTTP client of both APIs and the commands built on it."""

from __future__ import annotations

from .commands import add_people_commands, watch_run
from .http import ApiProblemError, ApiUnreachableError, ClientConfig, PlanexecClient
from .models import ApprovalRecorded, PlanVersion, RunDetail, RunEvent, RunPage, RunSummary
from .progress import RunProgress, StepProgress, event_line

__all__ = [
    "ApiProblemError",
    "ApiUnreachableError",
    "ApprovalRecorded",
    "ClientConfig",
    "PlanVersion",
    "PlanexecClient",
    "RunDetail",
    "RunEvent",
    "RunPage",
    "RunProgress",
    "RunSummary",
    "StepProgress",
    "add_people_commands",
    "event_line",
    "watch_run",
]
