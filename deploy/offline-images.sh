#!/usr/bin/env bash
# Builds local stand-ins for every public image that docker-compose.yml and deploy/Dockerfile
# name, for machines whose Docker engine cannot pull from a registry. Afterwards the
# unchanged compose file runs: `docker-compose up` (or `docker compose up`).
#
#   debian:bookworm-slim  a minimal Debian root file system made with debootstrap
#   redis:7-bookworm      that, plus Debian's redis-server
#   haproxy:2.8           that, plus Debian's haproxy
#   rust:1-bookworm       that, plus gcc and this machine's own Rust toolchain
#
# It also vendors the crates into deploy/.vendor, so the image build needs no crates.io.
# Images that already exist are kept (delete one to rebuild it); the root file system is
# cached in deploy/.offline. Needs root (debootstrap, chroot) and Debian's package mirror.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE="$PWD/deploy/.offline"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
mkdir -p "$STATE"

have() { docker image inspect "$1" >/dev/null 2>&1; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
log() { echo "offline-images: $*"; }

base_rootfs() {
  if [ ! -f "$STATE/base.done" ]; then
    command -v debootstrap >/dev/null || {
      as_root apt-get update -qq
      DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq debootstrap >/dev/null
    }
    log "debootstrap $SUITE (minbase) from $MIRROR"
    as_root rm -rf "$STATE/base"
    as_root debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$STATE/base" "$MIRROR" >"$STATE/debootstrap.log" 2>&1 \
      || { tail -20 "$STATE/debootstrap.log"; exit 1; }
    as_root chroot "$STATE/base" apt-get clean
    # What the official slim image leaves out too: docs, manuals, package lists.
    as_root sh -c "rm -rf '$STATE/base'/usr/share/doc/* '$STATE/base'/usr/share/man/* '$STATE/base'/usr/share/info/* '$STATE/base'/var/lib/apt/lists/* '$STATE/base'/var/cache/apt/*.bin"
    touch "$STATE/base.done"
  fi
}

# rootfs_with NAME PACKAGES...: a copy of the base with Debian packages installed.
rootfs_with() {
  local name="$1"; shift
  local dir="$STATE/$name"
  if [ ! -f "$dir.done" ]; then
    log "root file system $name: $*"
    as_root rm -rf "$dir"
    as_root cp -a "$STATE/base" "$dir"
    as_root cp /etc/resolv.conf "$dir/etc/resolv.conf"
    as_root chroot "$dir" sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $* >/dev/null && apt-get clean && rm -rf /var/lib/apt/lists/*"
    touch "$dir.done"
  fi
}

import() { # DIR IMAGE [--change ...]
  local dir="$1" image="$2"; shift 2
  log "importing $image"
  as_root tar -C "$dir" --numeric-owner -c . | docker import "$@" - "$image" >/dev/null
}

if ! have debian:bookworm-slim; then
  base_rootfs
  import "$STATE/base" debian:bookworm-slim --change 'CMD ["bash"]'
fi

if ! have redis:7-bookworm; then
  base_rootfs
  rootfs_with redis redis-server
  import "$STATE/redis" redis:7-bookworm --change 'CMD ["redis-server", "--protected-mode", "no"]' --change 'EXPOSE 6379'
fi

if ! have haproxy:2.8; then
  base_rootfs
  rootfs_with haproxy haproxy
  as_root mkdir -p "$STATE/haproxy/usr/local/etc/haproxy"
  import "$STATE/haproxy" haproxy:2.8 --change 'CMD ["haproxy", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]'
fi

if ! have rust:1-bookworm; then
  base_rootfs
  rootfs_with rust gcc libc6-dev make
  sysroot="$(rustc --print sysroot)"
  log "copying the Rust toolchain from $sysroot"
  as_root mkdir -p "$STATE/rust/usr/local/rust"
  for part in bin lib libexec; do
    [ -d "$sysroot/$part" ] && as_root cp -a "$sysroot/$part" "$STATE/rust/usr/local/rust/"
  done
  import "$STATE/rust" rust:1-bookworm \
    --change 'ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' --change 'CMD ["bash"]'
fi

# Crates for the image build, which may not reach crates.io. Refreshed when Cargo.lock changes.
lock_sum="$(sha256sum Cargo.lock | cut -d' ' -f1)"
if [ "$(cat "$STATE/vendor.sum" 2>/dev/null)" != "$lock_sum" ]; then
  log "vendoring crates into deploy/.vendor"
  mkdir -p deploy/.vendor
  find deploy/.vendor -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
  cargo vendor --locked --versioned-dirs -q deploy/.vendor >/dev/null
  # cargo vendor empties the folder, the committed README included.
  git checkout -- deploy/.vendor/README.md 2>/dev/null || true
  echo "$lock_sum" > "$STATE/vendor.sum"
fi

docker images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^(debian:bookworm-slim|redis:7-bookworm|haproxy:2.8|rust:1-bookworm) ' || true
log "done; now: docker-compose up"
