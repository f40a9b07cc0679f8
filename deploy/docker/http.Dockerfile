# syntax=docker/dockerfile:1
# The http service: only its extra (http). Build from the repository root:
#   docker build -f deploy/docker/http.Dockerfile -t subtitler-http .
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
RUN pip install --no-cache-dir ".[http]" \
    && useradd --system --uid 10001 --home-dir /home/subtitler --create-home subtitler
USER 10001

ENV SUBTITLER_HTTP_HOST=0.0.0.0 \
    SUBTITLER_HTTP_PORT=8080
EXPOSE 8080
CMD ["python", "-m", "services.http"]
