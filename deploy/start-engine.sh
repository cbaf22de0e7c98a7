#!/usr/bin/env bash
# Make sure a Docker engine answers (for `make images` and the stack test,
# tests/deploy/test_compose_stack.py): install Debian's docker.io, docker-compose and
# debootstrap when missing (as root), then start dockerd in the background if none
# runs. Tries the overlay2 storage driver, then vfs, then vfs without bridge
# networking and iptables (the stack's CI override uses host networking anyway).
# dockerd's log: /tmp/dockerd.log.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if ! command -v dockerd >/dev/null || ! command -v docker-compose >/dev/null \
    || ! command -v debootstrap >/dev/null; then
  apt-get update -qq && apt-get install -y -qq docker.io docker-compose debootstrap >/dev/null
fi
if docker info >/dev/null 2>&1; then
  echo "engine: Docker $(docker info --format '{{.ServerVersion}}') already running"
  exit 0
fi
attempt() {
  dockerd "$@" >/tmp/dockerd.log 2>&1 &
  local pid=$!
  for _ in $(seq 60); do
    if docker info >/dev/null 2>&1; then
      echo "engine: dockerd $* (pid $pid, log /tmp/dockerd.log)"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  echo "engine: dockerd $* did not come up: $(tail -n 3 /tmp/dockerd.log)" >&2
  return 1
}
attempt --storage-driver overlay2 \
  || attempt --storage-driver vfs \
  || attempt --storage-driver vfs --bridge=none --iptables=false \
  || { echo "engine: no Docker engine could be started" >&2; exit 1; }
