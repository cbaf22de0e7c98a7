#!/usr/bin/env bash
# Build the stack's images without an image registry or a Python package index
# reachable from inside a build (docs/deployment.md):
#   1. the base image from Debian packages (deploy/base/build-base.sh; kept as the cache),
#   2. the wheelhouse on this host: pip wheel '.[postgresql]' -w deploy/wheelhouse,
#   3. the bridge (./Dockerfile), PostgreSQL (deploy/postgres) and Orthanc
#      (deploy/orthanc) images FROM that base, apt reaching the Debian mirror,
# then prints each image's size.
#
#   deploy/build-images.sh              offline base from debootstrap
#   BASE=debian:bookworm-slim deploy/build-images.sh    online, from the registry image
#
# TAG (default local) tags the three images: mwl-bridge:TAG, mwl-bridge-postgres:TAG,
# mwl-bridge-orthanc:TAG. PIP (default .venv/bin/pip, else pip3) builds the wheelhouse.
set -euo pipefail
cd "$(dirname "$0")/.."
DOCKER=${DOCKER:-docker}
TAG=${TAG:-local}
BASE=${BASE:-mwl-bridge-base:bookworm}
PIP=${PIP:-$( [ -x .venv/bin/pip ] && echo .venv/bin/pip || echo pip3 )}
# The classic builder: the same on Debian's docker.io and on newer clients without buildx.
export DOCKER_BUILDKIT=0
start=$(date +%s)

if [ "$BASE" = mwl-bridge-base:bookworm ]; then
  DOCKER=$DOCKER bash deploy/base/build-base.sh "$BASE"
fi

echo "wheelhouse: pip wheel '.[postgresql]' -w deploy/wheelhouse"
mkdir -p deploy/wheelhouse
rm -f deploy/wheelhouse/mwl_bridge-*.whl   # always this tree's daemon
# The daemon's wheel is built from a clean copy of the tree's files (no stale build/
# folder can slip a deleted module in) with fixed timestamps: the same sources give
# the same wheel, so Docker's cache keeps the image's install layers until they change.
src=.
if git ls-files >/dev/null 2>&1; then
  src=$(mktemp -d /var/tmp/mwl-wheel.XXXXXX)
  trap 'rm -rf "$src"' EXIT
  git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do if [ -e "$f" ]; then printf '%s\0' "$f"; fi; done \
    | tar --null -T - -c | tar -x -C "$src"
fi
# (pip's notes about find-links folders of the host's pip config that do not exist are
# dropped; every other message passes.)
SOURCE_DATE_EPOCH=315532800 "$PIP" wheel -q --find-links deploy/wheelhouse \
  -w deploy/wheelhouse "$src[postgresql]" \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)

bash deploy/check-wheelhouse.sh deploy/wheelhouse

build() {  # build IMAGE CONTEXT [DOCKERFILE]
  local image=$1 context=$2 dockerfile=${3:-$2/Dockerfile} log
  log=$(mktemp)
  echo "image: $image"
  # Host networking: apt in the build reaches the mirror the host reaches.
  if ! $DOCKER build --network host --build-arg "BASE=$BASE" -t "$image" -f "$dockerfile" \
      "$context" >"$log" 2>&1; then
    tail -n 40 "$log" >&2; rm -f "$log"; echo "build of $image failed" >&2; exit 1
  fi
  rm -f "$log"
}
build "mwl-bridge:$TAG" . Dockerfile
build "mwl-bridge-postgres:$TAG" deploy/postgres
build "mwl-bridge-orthanc:$TAG" deploy/orthanc

# Each build leaves the previous images and the bridge's install stage untagged: drop
# them (only this stack's, by their label) so that disk use stays bounded.
$DOCKER image prune -f --filter label=mwl-bridge.stack=1 >/dev/null
echo "built in $(( $(date +%s) - start )) s:"
for image in "$BASE" "mwl-bridge:$TAG" "mwl-bridge-postgres:$TAG" "mwl-bridge-orthanc:$TAG"; do
  printf '  %-28s %s\n' "$image" "$($DOCKER image inspect -f '{{.Size}}' "$image" | numfmt --to=si)"
done
