# One image recipe for every Nattery service (device, trading, analytics, user, integration).
# Build from the repository root, naming the service and its port:
#   docker build -f infrastructure/docker/service.Dockerfile \
#     --build-arg SERVICE=device --build-arg PORT=3001 -t nattery-device .
# Only uv.lock, the root pyproject, shared/ (contracts and service kit) and that service are copied;
# uv installs exactly the locked dependencies of nattery-$SERVICE. docker-compose.yml passes the args.

FROM python:3.11-slim AS build
ARG SERVICE
COPY --from=ghcr.io/astral-sh/uv:0.13.8 /uv /uvx /bin/
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app

# Dependencies first (cached until the lock file changes), then the workspace members.
COPY uv.lock pyproject.toml ./
COPY shared/contracts/pyproject.toml shared/contracts/pyproject.toml
COPY shared/data/pyproject.toml shared/data/pyproject.toml
COPY shared/pyproject.toml shared/pyproject.toml
COPY services/${SERVICE}/pyproject.toml services/${SERVICE}/pyproject.toml
RUN --mount=type=cache,target=/root/.cache/uv \
    test -n "${SERVICE}" \
    && uv sync --frozen --no-dev --no-install-workspace --package nattery-${SERVICE}

COPY shared shared
COPY services/${SERVICE} services/${SERVICE}
# The console script `nattery-$SERVICE` is also reachable as `nattery-service`, so that CMD needs no
# shell to expand the argument.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package nattery-${SERVICE} \
    && ln -s "nattery-${SERVICE}" /app/.venv/bin/nattery-service

FROM python:3.11-slim AS runtime
ARG PORT
# libgomp1: LightGBM's OpenMP runtime (analytics' load forecasts); small enough to share one recipe.
RUN apt-get update && apt-get install --yes --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 nattery \
    && useradd --system --uid 10001 --gid nattery --home-dir /app --shell /usr/sbin/nologin nattery
COPY --from=build --chown=nattery:nattery /app/.venv /app/.venv
ENV PATH="/app/.venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    NATTERY_HOST=0.0.0.0
WORKDIR /app
USER nattery
EXPOSE ${PORT}
CMD ["nattery-service"]
