# mds-sink container image.
#   docker build -t mds-sink:0.1.0 .
#   docker run --rm mds-sink:0.1.0 --help
# Stage 1 builds the wheel (schemas/, migrations/ and samples/ are force-included into it, see
# pyproject.toml) and installs it into a virtualenv; stage 2 copies only that virtualenv.

FROM python:3.11-slim-bookworm AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Every dependency ships manylinux wheels (librdkafka and libpq are bundled), so no compiler is needed.
RUN python -m venv /opt/mds-sink
COPY pyproject.toml README.md ./
COPY src ./src
COPY schemas ./schemas
COPY migrations ./migrations
COPY samples ./samples
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/mds-sink/bin/pip install /wheels/*.whl \
 && /opt/mds-sink/bin/pip uninstall --yes pip setuptools \
 && /opt/mds-sink/bin/mds-sink version

FROM python:3.11-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="mds-sink" \
      org.opencontainers.image.description="Kafka/Redpanda to PostgreSQL/TimescaleDB market-data sink" \
      org.opencontainers.image.licenses="Apache-2.0"
# tini as PID 1: forwards SIGTERM to mds-sink (which drains, commits and leaves the group) and reaps zombies.
RUN apt-get update \
 && apt-get install --yes --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 mds \
 && useradd --system --uid 10001 --gid mds --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin mds
COPY --from=builder /opt/mds-sink /opt/mds-sink
ENV PATH=/opt/mds-sink/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MDS_SINK_HTTP__HOST=0.0.0.0 \
    MDS_SINK_LOG__FORMAT=json
# Numeric, so Kubernetes can verify runAsNonRoot.
USER 10001:10001
EXPOSE 8088
# Liveness of the consumer loop on the side port; urllib raises (exit 1) on a refused connection or a 503.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('MDS_SINK_HTTP__PORT', '8088') + '/healthz', timeout=4)"]
ENTRYPOINT ["/usr/bin/tini", "--", "mds-sink"]
CMD ["run"]
