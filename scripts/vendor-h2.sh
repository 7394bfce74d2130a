#!/usr/bin/env bash
# vendor/h2 is the crates.io release of h2 named in its Cargo.toml, byte for byte as
# published, with vendor/h2.patch applied (why: vendor/README.md). Never edit it by hand:
#
#   scripts/vendor-h2.sh                 re-create vendor/h2 (same release, current patch)
#   scripts/vendor-h2.sh --version X.Y.Z move to another release, then `cargo update -p h2`
#   scripts/vendor-h2.sh --check         fail unless vendor/h2 is exactly release + patch
#                                        (`make test` runs this)
#
# The release is fetched by cargo, which checks the archive against the checksum in the
# crates.io index; this script checks it again against the lock file cargo wrote.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

vendored_version() {
  sed -n 's/^version = "\(.*\)"$/\1/p' vendor/h2/Cargo.toml | head -1
}

mode=write
version=""
case "${1:-}" in
  "") ;;
  --check) mode=check ;;
  --version)
    version=${2:?"--version needs a release, e.g. 0.4.21"}
    ;;
  *)
    echo "usage: $0 [--check | --version X.Y.Z]" >&2
    exit 2
    ;;
esac
if [ -z "$version" ]; then
  [ -f vendor/h2/Cargo.toml ] || { echo "vendor/h2 is missing: $0 --version X.Y.Z" >&2; exit 1; }
  version=$(vendored_version)
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Fetch the release through a throwaway package of its own (outside this workspace, so
# the workspace's [patch] does not apply to it).
mkdir -p "$work/fetch/src"
cat >"$work/fetch/Cargo.toml" <<TOML
[package]
name = "fetch-h2"
version = "0.0.0"
edition = "2021"

[dependencies]
h2 = "=$version"

[workspace]
TOML
: >"$work/fetch/src/lib.rs"
cargo generate-lockfile --quiet --manifest-path "$work/fetch/Cargo.toml"
cargo fetch --quiet --manifest-path "$work/fetch/Cargo.toml"
expected=$(grep -A3 '^name = "h2"$' "$work/fetch/Cargo.lock" | sed -n 's/^checksum = "\(.*\)"$/\1/p')
archive=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"h2-$version.crate" 2>/dev/null | head -1)
[ -n "$archive" ] || { echo "h2 $version: cargo fetched it but its archive is not in the registry cache" >&2; exit 1; }
actual=$(sha256sum "$archive" | cut -d' ' -f1)
if [ -z "$expected" ] || [ "$actual" != "$expected" ]; then
  echo "h2 $version: archive checksum $actual is not the index's '$expected'" >&2
  exit 1
fi

tar -xzf "$archive" -C "$work"
# GIT_CEILING_DIRECTORIES: git apply never looks for a repository around the temporary
# directory; it applies the patch as plain `patch -p1` would.
(cd "$work/h2-$version" &&
  GIT_CEILING_DIRECTORIES="$work" git apply --whitespace=nowarn "$root/vendor/h2.patch") || {
  echo "vendor/h2.patch does not apply to h2 $version: port it to this release" >&2
  exit 1
}

case "$mode" in
  check)
    if ! diff -r "$work/h2-$version" vendor/h2 >"$work/diff"; then
      echo "vendor/h2 is not h2 $version from crates.io with vendor/h2.patch applied:" >&2
      head -40 "$work/diff" >&2
      echo "(re-create it with scripts/vendor-h2.sh; change the patch, never the copy)" >&2
      exit 1
    fi
    echo "vendor/h2: h2 $version from crates.io (checksum $actual) + vendor/h2.patch"
    ;;
  write)
    rm -rf vendor/h2
    mv "$work/h2-$version" vendor/h2
    echo "vendor/h2: h2 $version + vendor/h2.patch; now: cargo update -p h2"
    ;;
esac
