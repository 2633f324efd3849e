# syntax=docker/dockerfile:1
# vipkeeper: one image, two components.
#   docker build --target operator -t vipkeeper-operator .   (default target: the last one)
#   docker build --target agent    -t vipkeeper-agent .
# The Helm chart sets each container's command, so either image runs either component.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: wheels for the project and its dependencies (compilers live only here) ----------
FROM ${PYTHON_IMAGE} AS builder
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api/ api/
COPY nodeagent/ nodeagent/
COPY operator/ operator/
COPY lab/ lab/
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# --- runtime: Python, the wheels, tini; no compiler, no pip cache ------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="vipkeeper" \
      org.opencontainers.image.description="Floating IPs (VRRP) and IPVS load balancing for bare-metal Kubernetes" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/vipkeeper/vipkeeper"
# tini reaps the check and notify scripts the agent spawns (PID 1 reaps nothing otherwise).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*
COPY --from=builder /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels vipkeeper \
 && rm -rf /wheels \
 && groupadd --system --gid 65532 vipkeeper \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin vipkeeper \
 && mkdir -p /etc/vipkeeper/scripts /var/lib/vipkeeper /run/vipkeeper
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1

# --- agent: root in the container (the chart grants only NET_ADMIN and NET_RAW) ---------------
FROM runtime AS agent
ENTRYPOINT ["tini", "--", "vipkeeper-agent"]
CMD ["--kubernetes"]

# --- operator: unprivileged user -------------------------------------------------------------
FROM runtime AS operator
USER 65532:65532
ENTRYPOINT ["tini", "--", "vipkeeper-operator"]
CMD ["--peering=vipkeeper"]
