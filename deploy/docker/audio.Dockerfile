# syntax=docker/dockerfile:1
# The audio service: only its extra (audio). Build from the repository root:
#   docker build -f deploy/docker/audio.Dockerfile -t subtitler-audio .
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
RUN pip install --no-cache-dir ".[audio]" \
    && useradd --system --uid 10001 --home-dir /home/subtitler --create-home subtitler
USER 10001
# Server-side paths (CreateJob) lie under the media root: mount the media here.
ENV SUBTITLER_AUDIO_MEDIA_ROOT=/media
VOLUME /media

ENV SUBTITLER_AUDIO_HOST=0.0.0.0 \
    SUBTITLER_AUDIO_PORT=50052
EXPOSE 50052
ENV SUBTITLER_AUDIO_METRICS_PORT=9100
EXPOSE 9100
CMD ["python", "-m", "services.audio"]
