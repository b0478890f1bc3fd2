#!/usr/bin/env bash
# Make a local stand-in for debian:<suite>-slim, for machines whose Docker daemon
# cannot pull images. Builds a minimal Debian root filesystem with debootstrap
# from the apt source this machine is already configured with, trims it, and
# imports it as a Docker image. Prints the image tag on stdout (the last line).
#
# The image is cached by tag: a second run returns at once. Set
# STRATA_BASE_REBUILD=1 to build it again.
#
# Overrides (all optional):
#   STRATA_DEBIAN_SUITE   Debian codename (default: this machine's VERSION_CODENAME)
#   STRATA_DEBIAN_MIRROR  archive URL (default: read from this machine's apt sources)
#   STRATA_BASE_TAG       image tag (default: strata-local-base:<suite>-<recipe>)
set -euo pipefail

# Bump when the recipe below changes, so cached images built the old way are not reused.
RECIPE=r1

log() { echo "base-image: $*" >&2; }
die() { log "error: $*"; exit 1; }

suite=${STRATA_DEBIAN_SUITE:-}
if [[ -z $suite && -r /etc/os-release ]]; then
  suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
fi
[[ -n $suite ]] || die "cannot tell the Debian suite; set STRATA_DEBIAN_SUITE (e.g. bookworm)"

tag=${STRATA_BASE_TAG:-strata-local-base:${suite}-${RECIPE}}

if [[ ${STRATA_BASE_REBUILD:-0} != 1 ]] && docker image inspect "$tag" >/dev/null 2>&1; then
  log "reusing cached $tag"
  echo "$tag"
  exit 0
fi

# The archive to bootstrap from: the one apt on this machine already uses for the
# suite's main component. `apt-get indextargets` reads both sources.list and deb822
# .sources files and honours disabled entries, so nothing is parsed by hand here.
# It lists only sources whose indexes were downloaded, so on a machine that never ran
# `apt-get update` it runs that once first.
apt_mirror() {
  apt-get indextargets --format '$(REPO_URI)' \
    "Release: $suite" 'Target-Of: deb' 'Identifier: Packages' 'Component: main' 2>/dev/null |
    head -n 1 || true
}
mirror=${STRATA_DEBIAN_MIRROR:-}
if [[ -z $mirror ]]; then
  command -v apt-get >/dev/null 2>&1 ||
    die "apt-get not found; set STRATA_DEBIAN_MIRROR to a Debian archive URL"
  mirror=$(apt_mirror)
  if [[ -z $mirror && $(id -u) == 0 ]]; then
    log "no apt indexes yet: apt-get update"
    apt-get update -qq >/dev/null 2>&1 || true
    mirror=$(apt_mirror)
  fi
  [[ -n $mirror ]] || die "no 'deb' source for suite '$suite' (component main) in this machine's apt configuration; set STRATA_DEBIAN_MIRROR"
fi

if ! command -v debootstrap >/dev/null 2>&1; then
  [[ $(id -u) == 0 ]] || die "debootstrap is not installed (apt-get install debootstrap, as root)"
  log "installing debootstrap"
  # Installing one package only needs fresh lists when the cached ones are missing or stale.
  apt-get install -y -qq debootstrap >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null && apt-get install -y -qq debootstrap >/dev/null; } ||
    die "could not install debootstrap"
fi
[[ $(id -u) == 0 ]] || die "debootstrap needs root"

arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
work=$(mktemp -d /tmp/strata-base.XXXXXX)
cleanup() {
  # debootstrap mounts /proc (and sometimes /sys) inside the target; never leave them behind.
  for m in proc sys dev/pts; do
    mountpoint -q "$work/rootfs/$m" 2>/dev/null && umount -l "$work/rootfs/$m" || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

rootfs=$work/rootfs
log "debootstrap $suite ($arch, minbase) from $mirror"
start=$SECONDS
if ! debootstrap --variant=minbase --arch="$arch" "$suite" "$rootfs" "$mirror" \
  >"$work/debootstrap.log" 2>&1; then
  tail -n 30 "$work/debootstrap.log" >&2 || true
  tail -n 30 "$rootfs/debootstrap/debootstrap.log" >&2 2>/dev/null || true
  die "debootstrap failed"
fi
log "debootstrap took $((SECONDS - start))s"

# Trim what a runtime image never needs (the slim images drop the same kinds of files).
rm -rf "$rootfs"/var/cache/apt/archives/*.deb \
  "$rootfs"/var/cache/apt/*.bin \
  "$rootfs"/var/lib/apt/lists/* \
  "$rootfs"/var/log/* \
  "$rootfs"/usr/share/doc/* \
  "$rootfs"/usr/share/man/* \
  "$rootfs"/usr/share/info/* \
  "$rootfs"/usr/share/locale/* \
  "$rootfs"/usr/share/lintian \
  "$rootfs"/debootstrap \
  "$rootfs"/tmp/* "$rootfs"/var/tmp/*
# An image gets its own resolv.conf and hostname from Docker at run time.
: >"$rootfs/etc/resolv.conf"
: >"$rootfs/etc/hostname"

log "importing as $tag"
tar --numeric-owner -C "$rootfs" -c . |
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' \
    --message "debootstrap --variant=minbase $suite from the host's apt source" \
    - "$tag" >/dev/null
log "built $tag ($(docker image inspect --format '{{.Size}}' "$tag") bytes)"
echo "$tag"
