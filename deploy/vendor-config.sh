#!/bin/sh
# Used inside the image build: when deploy/.vendor holds vendored crates (made by
# deploy/offline-images.sh on machines that cannot reach crates.io from a build), point
# cargo at them. Otherwise cargo fetches from crates.io as usual.
set -eu
if [ -f deploy/.vendor/Cargo.lock ] || ls deploy/.vendor/*/Cargo.toml >/dev/null 2>&1; then
  mkdir -p .cargo
  cat > .cargo/config.toml <<'TOML'
[source.crates-io]
replace-with = "vendored"
[source.vendored]
directory = "deploy/.vendor"
[net]
offline = true
TOML
  rm -f deploy/.vendor/README.md
  echo "using vendored crates"
fi
