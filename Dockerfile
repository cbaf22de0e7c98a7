# The daemon in a container, for docker-compose.yml. Inside the container the
# listeners bind to all interfaces (set by the compose file); the compose file
# publishes them on the host's loopback only, so opening them to the hospital
# network stays a deliberate change.
FROM python:3.11-slim

RUN useradd --system --home /var/lib/mwl-bridge --create-home mwl
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bridge ./bridge
RUN pip install --no-cache-dir '.[postgresql]'
COPY mappings ./mappings

USER mwl
EXPOSE 2575 11112
ENTRYPOINT ["mwl-bridge"]
CMD ["serve"]
