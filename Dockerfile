# One image for the API and the projector; docker-compose.yml chooses the command.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml ./
COPY ledger ledger
COPY projections projections
COPY api api
COPY infra infra
COPY ops ops
COPY client client
COPY bench bench
RUN pip install .
USER nobody
CMD ["python", "-m", "api"]
