# syntax=docker/dockerfile:1
# planexec: one image for every planexec process (planner, executor, worker, migrate, keys) and
# for the demo of docker-compose.yml (httpbin, demo-init, demo: `python -m planexec.demo ...`).
# Build: docker build -t planexec:local .   Run: docker run planexec:local planner
# The build context is the allowlist in .dockerignore (no .venv, .data, .env or .git).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
# A virtualenv keeps the install in one directory the runtime stage copies whole; the build
# tooling (setuptools, wheel) stays in this stage. The `demo` extra brings the tool servers the
# executor runs over stdio (mcp-server-git, mcp-server-time) and httpbin.
RUN python -m venv /opt/planexec \
 && /opt/planexec/bin/pip install ".[demo]" \
 && /opt/planexec/bin/pip uninstall --yes pip

FROM python:3.11-slim
LABEL org.opencontainers.image.title="planexec" \
      org.opencontainers.image.description="Planner-as-service: intents become validated, policy-checked, versioned plans that run durably." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
ENV PATH="/opt/planexec/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# mcp-server-git drives the git binary (GitPython).
RUN apt-get update \
 && apt-get install --yes --no-install-recommends git \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 planexec \
 && useradd --system --uid 10001 --gid planexec --create-home --home-dir /home/planexec planexec
COPY --from=build /opt/planexec /opt/planexec
# /opt/planexec/demo: a stable path to the installed demo assets (policies, templates, OpenAPI
# document) for the planner's PLANEXEC_POLICY_DIR and PLANEXEC_TEMPLATES_DIR. The demo data
# directory belongs to the non-root user, so the named volume mounted there does too (an empty
# volume takes the ownership of the image directory it is mounted on).
RUN ln -s "$(python -c 'import pathlib, planexec.demo as d; print(pathlib.Path(d.__file__).parent / "assets")')" /opt/planexec/demo \
 && install -d -o planexec -g planexec /var/lib/planexec-demo
# The working directory is the user's home, so `.data/` (embedded Postgres, used only when
# PLANEXEC_DATABASE_URL is unset) is writable by the non-root user.
WORKDIR /home/planexec
USER planexec:planexec
EXPOSE 8100 8200 8300
ENTRYPOINT ["planexec"]
CMD ["planner"]
