# syntax=docker/dockerfile:1
# planexec: one image for every planexec process (planner, executor, worker, migrate, keys).
# Build: docker build -t planexec:local .   Run: docker run planexec:local planner
# The build context is the allowlist in .dockerignore (no .venv, .data, .env or .git).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
# A virtualenv keeps the install in one directory the runtime stage copies whole; the build
# tooling (setuptools, wheel) stays in this stage.
RUN python -m venv /opt/planexec \
 && /opt/planexec/bin/pip install . \
 && /opt/planexec/bin/pip uninstall --yes pip

FROM python:3.11-slim
LABEL org.opencontainers.image.title="planexec" \
      org.opencontainers.image.description="Planner-as-service: intents become validated, policy-checked, versioned plans that run durably." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
ENV PATH="/opt/planexec/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 planexec \
 && useradd --system --uid 10001 --gid planexec --create-home --home-dir /home/planexec planexec
COPY --from=build /opt/planexec /opt/planexec
# The working directory is the user's home, so `.data/` (embedded Postgres, used only when
# PLANEXEC_DATABASE_URL is unset) is writable by the non-root user.
WORKDIR /home/planexec
USER planexec:planexec
EXPOSE 8100 8200
ENTRYPOINT ["planexec"]
CMD ["planner"]
