"""Provider health for operators: the shared health in Redis plus the job table's next runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from nattery_integration.jobs import repository as jobs_repository
from nattery_integration.providers.schemas import ProviderStatus
from nattery_shared.errors import DependencyUnavailable

if TYPE_CHECKING:
    from nattery_integration.context import IntegrationContext
    from nattery_integration.jobs.service import JobRunner


async def statuses(ctx: IntegrationContext, runner: JobRunner) -> list[ProviderStatus]:
    async with ctx.pool.connection() as conn:
        next_runs = await jobs_repository.next_runs_by_provider(conn, runner.registry.names())
    out = []
    for name in ctx.clients.names():
        spec = ctx.clients.spec(name)
        try:
            health = await ctx.clients.health.read(name)
        except (RedisError, OSError) as err:
            raise DependencyUnavailable("provider health (redis) unavailable") from err
        limit = spec.rate_limit
        out.append(
            ProviderStatus(
                name=name,
                title=spec.title,
                base_url=spec.base_url,
                breaker_state=health.get("breaker_state", "closed"),
                breaker_changed_at=health.get("breaker_changed_at"),
                breaker_replica=health.get("breaker_replica"),
                last_success_at=health.get("last_success_at"),
                last_success_endpoint=health.get("last_success_endpoint"),
                last_error_at=health.get("last_error_at"),
                last_error_endpoint=health.get("last_error_endpoint"),
                last_error=health.get("last_error"),
                next_run_at=next_runs.get(name),
                jobs=[s.name for s in runner.registry.for_provider(name)],
                rate_limit=f"{limit.requests} per {limit.per_s:g} s (burst {limit.burst})",
            )
        )
    return out
