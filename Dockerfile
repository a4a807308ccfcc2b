# syntax=docker/dockerfile:1
#
# The gridwatch image: one image for every pipeline role. The role is the command, e.g.
#   docker run --rm gridwatch ingest mqtt
# Configuration comes from GRIDWATCH_* environment variables (gridwatch/settings.py).
# Production installs no extras: the embedded services are for `gridwatch demo` only.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

# A virtualenv keeps the installed project self-contained, so the runtime stage copies one
# directory and none of the build's leftovers (sources, build dirs, pip caches).
RUN python -m venv /opt/gridwatch
ENV PATH=/opt/gridwatch/bin:$PATH

WORKDIR /src
COPY . .
RUN pip install . \
    && gridwatch --help >/dev/null


FROM python:${PYTHON_VERSION}-slim AS runtime

LABEL org.opencontainers.image.title="gridwatch" \
      org.opencontainers.image.description="Street-level grid-governance data fusion and alerting" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/gridwatch/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GRIDWATCH_EVIDENCE_DIR=/var/lib/gridwatch/evidence

# A fixed, non-root uid/gid so bind-mounted directories can be granted to it on the host.
RUN groupadd --system --gid 10001 gridwatch \
    && useradd --system --uid 10001 --gid gridwatch --home-dir /var/lib/gridwatch \
       --shell /usr/sbin/nologin gridwatch \
    && install -d -o gridwatch -g gridwatch -m 0750 /var/lib/gridwatch /var/lib/gridwatch/evidence

COPY --from=build /opt/gridwatch /opt/gridwatch

# The working directory holds no .env file: settings come from the environment only.
WORKDIR /var/lib/gridwatch
USER gridwatch:gridwatch

ENTRYPOINT ["gridwatch"]
CMD ["--help"]
