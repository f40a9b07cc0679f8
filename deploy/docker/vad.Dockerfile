# syntax=docker/dockerfile:1
# The vad service: only its extra (vad), and its models. Build from the repository root:
#   docker build -f deploy/docker/vad.Dockerfile -t subtitler-vad .
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
# silero VAD's ONNX model comes with faster-whisper.
RUN pip install --no-cache-dir ".[vad]" \
    && useradd --system --uid 10001 --home-dir /home/subtitler --create-home subtitler
USER 10001

ENV SUBTITLER_VAD_HOST=0.0.0.0 \
    SUBTITLER_VAD_PORT=50053
EXPOSE 50053
ENV SUBTITLER_VAD_METRICS_PORT=9100
EXPOSE 9100
CMD ["python", "-m", "services.vad"]
