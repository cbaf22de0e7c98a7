#!/usr/bin/env bash
# The offline base image: a Debian bookworm minbase root filesystem made with
# debootstrap from the Debian mirror, imported with `docker import` (no image
# registry involved). Every other image of the stack builds FROM it.
#
#   deploy/base/build-base.sh [IMAGE]     (default mwl-bridge-base:bookworm)
#
# The image is the cache: when it exists the script does nothing (REBUILD_BASE=1
# forces a new one). DEBIAN_MIRROR overrides the mirror (default: the one apt uses
# on this host, else deb.debian.org).
set -euo pipefail
IMAGE=${1:-mwl-bridge-base:bookworm}
SUITE=bookworm
DOCKER=${DOCKER:-docker}

if [ "${REBUILD_BASE:-0}" != 1 ] && $DOCKER image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "base: $IMAGE exists (REBUILD_BASE=1 to make it anew)"
  exit 0
fi

mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  # deb822 (URIs:) or one-line (deb URL SUITE ...) sources, the first Debian one.
  mirror=$( { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null || true; } \
    | sed -n -e 's/^URIs:[[:space:]]*\(http[^[:space:]]*\/debian\)\/\{0,1\}$/\1/p' \
             -e 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\{0,1\}\(http[^[:space:]]*\/debian\)\/\{0,1\}[[:space:]].*/\2/p' \
    | head -n1)
  mirror=${mirror:-http://deb.debian.org/debian}
fi
security=${DEBIAN_SECURITY_MIRROR:-${mirror%/debian}/debian-security}

work=$(mktemp -d /var/tmp/mwl-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "base: debootstrap --variant=minbase $SUITE from $mirror"
debootstrap --variant=minbase "$SUITE" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 30 "$work/debootstrap.log" >&2; echo "base: debootstrap failed" >&2; exit 1; }

root=$work/rootfs
# Updates and security fixes come from the same mirror at image build time.
cat >"$root/etc/apt/sources.list" <<SOURCES
deb $mirror $SUITE main
deb $mirror $SUITE-updates main
deb $security $SUITE-security main
SOURCES
# Container hygiene, as Debian's own registry images do: no recommends, no caches
# or documentation kept in the layers, no services started by package scripts.
cat >"$root/etc/apt/apt.conf.d/90container" <<'APT'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
APT
cat >"$root/etc/dpkg/dpkg.cfg.d/90container" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
DPKG
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
  "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log "$root"/tmp/*
rm -f "$root/etc/machine-id" "$root/etc/hostname"

echo "base: importing into $IMAGE"
tar -C "$root" --numeric-owner -c . | $DOCKER import \
  --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' - "$IMAGE" >/dev/null
echo "base: $IMAGE $($DOCKER image inspect -f '{{.Size}}' "$IMAGE" | numfmt --to=si)"
