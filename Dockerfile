# The daemon's image, built without reaching any Python package index: the Python
# packages come from a wheelhouse made on the build host (deploy/build-images.sh runs
# `pip wheel '.[postgresql]' -w deploy/wheelhouse`), the interpreter from Debian.
#
#   offline (default): BASE is the debootstrap image made by deploy/base/build-base.sh
#   online:            docker build --build-arg BASE=debian:bookworm-slim ...
#
# Either base must be Debian bookworm: its python3 is 3.11, which the wheels'
# compiled parts (cp311, manylinux glibc <= 2.36) are built for.
#
# The compose file runs it with a read-only root filesystem as the unprivileged
# user mwl (uid 10001); data goes to the volume on /var/lib/mwl-bridge, the
# configuration comes from /etc/mwl-bridge/mwl-bridge.yaml (mount your own over it)
# and MWL_BRIDGE_* environment variables, and secrets from files (compose secrets).
ARG BASE=mwl-bridge-base:bookworm

FROM ${BASE} AS runtime
ARG DEBIAN_FRONTEND=noninteractive
LABEL mwl-bridge.stack=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/*

FROM runtime AS install
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/*
COPY deploy/wheelhouse /tmp/wheelhouse
RUN python3 -m venv /opt/mwl-bridge \
 && /opt/mwl-bridge/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheelhouse \
      'mwl-bridge[postgresql]' \
 && /opt/mwl-bridge/bin/pip uninstall -y -q setuptools pip

FROM runtime
RUN groupadd --gid 10001 mwl \
 && useradd --uid 10001 --gid mwl --home-dir /var/lib/mwl-bridge --no-create-home \
      --shell /usr/sbin/nologin mwl \
 && install -d -o mwl -g mwl -m 0700 /var/lib/mwl-bridge
COPY --from=install /opt/mwl-bridge /opt/mwl-bridge
COPY mappings /app/mappings
COPY deploy/bridge/mwl-bridge.yaml /etc/mwl-bridge/mwl-bridge.yaml
ENV PATH=/opt/mwl-bridge/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER mwl
WORKDIR /var/lib/mwl-bridge
VOLUME /var/lib/mwl-bridge
EXPOSE 2575 11112
# Ready when the store answers, the writer runs, both listeners listen and a mapping
# set is loaded: the console's /readyz on the container's loopback.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('MWL_BRIDGE_ADMIN__PORT', '8080'), timeout=4)"]
ENTRYPOINT ["mwl-bridge", "--config", "/etc/mwl-bridge/mwl-bridge.yaml"]
CMD ["serve"]
