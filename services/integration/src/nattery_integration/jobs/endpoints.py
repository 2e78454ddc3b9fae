"""Scheduled jobs, for operators: last run, outcome, error, next run."""

from __future__ import annotations

from fastapi import APIRouter

from nattery_integration.deps import JobRunnerDep
from nattery_integration.jobs.schemas import JobView
from nattery_shared.auth import Viewer

router = APIRouter(tags=["jobs"])


@router.get("/jobs", summary="Scheduled jobs: last run, outcome, error and next run")
async def list_jobs(_: Viewer, runner: JobRunnerDep) -> list[JobView]:
    return await runner.views()
