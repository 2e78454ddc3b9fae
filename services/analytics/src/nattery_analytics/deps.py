"""Typed dependencies for what the analytics service builds in its lifespan (``request.state``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from nattery_analytics.forecasts.service import LoadForecastService


def get_load_forecasts(request: Request) -> LoadForecastService:
    forecasts: LoadForecastService = request.state.load_forecasts
    return forecasts


LoadForecastsDep = Annotated[LoadForecastService, Depends(get_load_forecasts)]
