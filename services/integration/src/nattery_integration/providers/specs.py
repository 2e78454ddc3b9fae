"""The provider table, as data: where each provider lives, how patient and how polite we are with it,
and what an org's connection to it needs (settings schema, secret names).

Base URLs end with the API's version path; connectors request paths relative to it
(``client.get("products/AGILE-24-10-01/", extensions={"endpoint": "products"})``). Each base URL, timeout,
rate limit and attempt count can be overridden by ``NATTERY_INTEGRATION__<PROVIDER>__*``
(settings.ProviderSettings). To add a provider: a ``ProviderSpec`` here, a ``ProviderSettings`` field
of the same name in settings.IntegrationSection, and (if orgs connect to it) a probe in
connections/probes.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from pydantic import BaseModel, ConfigDict, Field

from nattery_integration.providers.ratelimit import RateLimit
from nattery_integration.settings import IntegrationSection


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3  # first try included
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    jitter_s: float = 0.5
    # A Retry-After longer than this is not waited for: ProviderRateLimited is raised instead.
    max_retry_after_s: float = 60.0


@dataclass(frozen=True)
class BreakerPolicy:
    failure_threshold: int = 5
    open_s: float = 30.0


@dataclass(frozen=True)
class Timeouts:
    connect_s: float = 5.0
    read_s: float = 20.0
    write_s: float = 10.0
    pool_s: float = 5.0


class NoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OctopusSettings(BaseModel):
    """Agile import (and optionally Agile Outgoing export) rates for one GSP region."""

    model_config = ConfigDict(extra="forbid")
    product_code: str = Field(
        default="AGILE-24-10-01", pattern=r"^[A-Z0-9-]{3,64}$", description="e.g. AGILE-24-10-01"
    )
    export_product_code: str | None = Field(
        default=None, pattern=r"^[A-Z0-9-]{3,64}$", description="e.g. AGILE-OUTGOING-19-05-13"
    )
    region: str = Field(pattern=r"^[A-HJ-NP]$", description="GSP region letter A..P (no I or O)")


class EntsoeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bidding_zone: str = Field(pattern=r"^10Y[0-9A-Z-]{13}$", description="EIC code, e.g. 10YNL----------L")


@dataclass(frozen=True)
class ConnectionSpec:
    """What an org's connection to the provider holds."""

    settings_model: type[BaseModel] = NoSettings
    required_secrets: tuple[str, ...] = ()
    optional_secrets: tuple[str, ...] = ()

    @property
    def secret_names(self) -> tuple[str, ...]:
        return self.required_secrets + self.optional_secrets


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    title: str
    base_url: str
    rate_limit: RateLimit
    timeouts: Timeouts = field(default_factory=Timeouts)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    connection: ConnectionSpec = field(default_factory=ConnectionSpec)
    # Longest we queue for a rate-limit token before giving up with ProviderRateLimited.
    max_rate_wait_s: float = 30.0

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]{1,31}", self.name):
            raise ValueError(f"provider name {self.name!r}: lowercase letters, digits, underscores")


PROVIDERS: dict[str, ProviderSpec] = {
    spec.name: spec
    for spec in (
        ProviderSpec(
            name="octopus",
            title="Octopus Energy",
            base_url="https://api.octopus.energy/v1/",
            rate_limit=RateLimit(requests=100, per_s=60, burst=5),  # none published: be polite
            connection=ConnectionSpec(settings_model=OctopusSettings, optional_secrets=("api_key",)),
        ),
        ProviderSpec(
            name="elexon",
            title="Elexon Insights",
            base_url="https://data.elexon.co.uk/bmrs/api/v1/",
            rate_limit=RateLimit(requests=60, per_s=60, burst=5),  # unpublished
        ),
        ProviderSpec(
            name="modo",
            title="Modo Energy",
            base_url="https://api.modoenergy.com/pub/v1/",
            # "seems to allow 1 call per minute" across the live endpoints (providers.md §3)
            rate_limit=RateLimit(requests=2, per_s=120, burst=1),
            max_rate_wait_s=130.0,
            connection=ConnectionSpec(required_secrets=("token",)),
        ),
        ProviderSpec(
            name="entsoe",
            title="ENTSO-E Transparency Platform",
            base_url="https://web-api.tp.entsoe.eu/",
            # 400/min per user and IP, a 10-minute ban past it (providers-2.md §1.4): stay well below
            rate_limit=RateLimit(requests=300, per_s=60, burst=10),
            timeouts=Timeouts(read_s=60.0),
            connection=ConnectionSpec(settings_model=EntsoeSettings, required_secrets=("security_token",)),
        ),
        ProviderSpec(
            name="open_meteo",
            title="Open-Meteo",
            base_url="https://api.open-meteo.com/v1/",
            rate_limit=RateLimit(requests=300, per_s=60, burst=10),  # 600/min free tier
        ),
    )
}


def configured(
    section: IntegrationSection, specs: dict[str, ProviderSpec] | None = None
) -> dict[str, ProviderSpec]:
    """The table with the settings' overrides applied (base URL, timeout, rate limit, attempts)."""
    out = {}
    for name, spec in (specs or PROVIDERS).items():
        o = section.provider(name)
        if o.base_url:
            spec = replace(spec, base_url=o.base_url)
        if o.timeout_s:
            spec = replace(spec, timeouts=replace(spec.timeouts, read_s=o.timeout_s))
        if o.rate_limit_requests or o.rate_limit_per_s:
            requests = o.rate_limit_requests or spec.rate_limit.requests
            burst = min(spec.rate_limit.burst, requests - 1) if requests > 1 else 1
            spec = replace(
                spec,
                rate_limit=RateLimit(
                    requests=max(requests, 2), per_s=o.rate_limit_per_s or spec.rate_limit.per_s, burst=burst
                ),
            )
        if o.max_attempts:
            spec = replace(spec, retry=replace(spec.retry, max_attempts=o.max_attempts))
        out[name] = spec
    return out
