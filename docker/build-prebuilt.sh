#!/usr/bin/env bash
# Build the Strata image without pulling anything: package a `strata` binary built on
# this host into docker/Dockerfile's runtime stage (target `prebuilt`).
#
#   docker/build-prebuilt.sh [TAG [BINARY]]
#
# TAG defaults to strata:latest (what docker/compose.yaml runs), BINARY to
# target/release/strata (build it first: cargo build --release --locked -p strata-server).
# The runtime base is $RUNTIME_BASE when set, otherwise a Debian image of this host's
# release made locally by docker/base-image.sh, so the binary finds the same glibc it
# was linked against.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

tag=${1:-strata:latest}
bin=${2:-$here/../target/release/strata}

[[ -x $bin ]] || { echo "build-prebuilt: no executable at $bin" >&2; exit 1; }

base=${RUNTIME_BASE:-}
if [[ -z $base ]]; then
  base=$(bash "$here/base-image.sh" | tail -n 1)
fi

ctx=$(mktemp -d /tmp/strata-image-ctx.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
# The context is only the Dockerfile and the binary, so nothing else is sent to the daemon.
mkdir -p "$ctx/docker/prebuilt"
cp "$here/Dockerfile" "$ctx/Dockerfile"
cp "$bin" "$ctx/docker/prebuilt/strata"
chmod 0755 "$ctx/docker/prebuilt/strata"
# Like the builder stage: drop debug info (the release profile keeps line tables),
# keep the symbols so panics still name their functions.
if command -v strip >/dev/null 2>&1; then strip --strip-debug "$ctx/docker/prebuilt/strata"; fi

echo "build-prebuilt: $tag from $bin on $base" >&2
docker build --quiet --force-rm --target prebuilt --build-arg "RUNTIME_BASE=$base" -t "$tag" "$ctx" >&2
echo "$tag"
