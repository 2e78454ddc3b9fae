"""Typed dependencies for what the integration service builds in its lifespan (``request.state``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

if TYPE_CHECKING:
    from nattery_integration.context import IntegrationContext
    from nattery_integration.jobs.service import JobRunner
    from nattery_integration.webhooks.service import WebhookService


def get_ctx(request: Request) -> IntegrationContext:
    ctx: IntegrationContext = request.state.ctx
    return ctx


def get_job_runner(request: Request) -> JobRunner:
    runner: JobRunner = request.state.job_runner
    return runner


def get_webhooks(request: Request) -> WebhookService:
    webhooks: WebhookService = request.state.webhooks
    return webhooks


CtxDep = Annotated["IntegrationContext", Depends(get_ctx)]
JobRunnerDep = Annotated["JobRunner", Depends(get_job_runner)]
WebhooksDep = Annotated["WebhookService", Depends(get_webhooks)]
