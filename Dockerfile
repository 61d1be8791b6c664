# The production image: the gateway and the projection worker run from it with different commands.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
RUN pip install --no-cache-dir uv
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --no-install-project
COPY ledger ledger
COPY projections projections
COPY gateway gateway
COPY migrations migrations
RUN uv sync --locked --no-dev && useradd --system --uid 10001 ledger
USER ledger
ENV PATH="/app/.venv/bin:$PATH"
EXPOSE 8000
CMD ["ledger", "serve", "--host", "0.0.0.0", "--port", "8000"]
