# The one dwf image: every service (`dwf serve <service>`), its migrations
# (`dwf migrate <service>`) and the staging sandboxes (`dwf sandbox erp|wms|channel`).
#   docker build -t registry.example.com/dwf/dwf:$(git rev-parse --short HEAD) .
# Pin the base by digest in CI (python:3.11-slim@sha256:...) for reproducible builds.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/dwf
WORKDIR /src
# Dependencies are pinned in pyproject.toml; generated protobuf code is committed (libs/dwf).
# The sandboxes extra lets the same image run the staging sandboxes (`dwf sandbox channel`).
COPY pyproject.toml README.md ./
COPY libs ./libs
COPY services ./services
RUN /opt/dwf/bin/pip install ".[sandboxes]" \
 && /opt/dwf/bin/python -m compileall -q /opt/dwf/lib

FROM python:3.11-slim
ENV PATH=/opt/dwf/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# Fixed ids: the Helm chart runs the pods as runAsUser/runAsGroup 10001.
RUN groupadd --system --gid 10001 dwf \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin dwf
COPY --from=build /opt/dwf /opt/dwf
USER 10001:10001
# gRPC (DWF_GRPC_PORT) and Prometheus metrics (DWF_METRICS_PORT).
EXPOSE 50051 9464
ENTRYPOINT ["dwf"]
CMD ["--help"]
