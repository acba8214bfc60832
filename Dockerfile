# One image for the API and the projector; docker-compose.yml chooses the command.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
# gcc for mypyc, which compiles ledger/ into .build/mypyc (tools/compiled.py).
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml ./
COPY ledger ledger
COPY projections projections
COPY api api
COPY infra infra
COPY ops ops
COPY client client
COPY bench bench
COPY dispatch dispatch
# Only to build: tools/compiled.py compiles ledger/ (the services never import tools/).
COPY tools tools
# Editable, so that ledger/ finds its compiled build beside it in /app/.build.
RUN pip install -e . mypy==2.4.1 setuptools==65.5.0 && python -m tools.compiled
USER nobody
CMD ["python", "-m", "api"]
