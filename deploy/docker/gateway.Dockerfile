# syntax=docker/dockerfile:1
# The gateway service: only its extra (gateway). Build from the repository root:
#   docker build -f deploy/docker/gateway.Dockerfile -t subtitler-gateway .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY common ./common
COPY gateway ./gateway
COPY services ./services
COPY subtitler ./subtitler
RUN pip install --no-cache-dir ".[gateway]" \
    && useradd --system --uid 10001 --home-dir /home/subtitler --create-home subtitler \
    && mkdir -p /var/lib/subtitler && chown 10001 /var/lib/subtitler
USER 10001
# Jobs, their events and results (SQLite) and kept uploads: mount a volume here.
ENV SUBTITLER_GATEWAY_DATA_DIR=/var/lib/subtitler
VOLUME /var/lib/subtitler

ENV SUBTITLER_GATEWAY_HOST=0.0.0.0 \
    SUBTITLER_GATEWAY_PORT=50051
EXPOSE 50051
ENV SUBTITLER_GATEWAY_METRICS_PORT=9100
EXPOSE 9100
CMD ["python", "-m", "gateway"]
