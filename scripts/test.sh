#!/usr/bin/env bash
# `make test`: formatting, lints, then every test of the workspace against the
# real components (SoftHSM2, swtpm), then the swtpm test suites again with swtpm
# in containers (testcontainers on a private podman). Test logs of child
# processes land in target/test-logs/.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== vendor/h2 is h2 from crates.io plus vendor/h2.patch (vendor/README.md)"
bash scripts/vendor-h2.sh --check

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast --failure-output final
else
  echo "cargo-nextest not found: using cargo test (one process per test binary, not per test)"
  cargo test --workspace --no-fail-fast
fi

# The swtpm harness's container backend (docs/testing.md): the tpm crate's tests
# and the harness's own once more, each swtpm in a container (about 15 s).
# `with-podman` (built by the run above, with the same features, so nothing is
# rebuilt) serves a private rootful podman's Docker API and points DOCKER_HOST
# at it; `container` fails rather than fall back to processes when that engine
# does not answer.
echo "== tpm tests, swtpm in containers (IRONROOT_SWTPM_BACKEND=container)"
TARGET_DIR=$(cargo metadata --no-deps --format-version 1 |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
WITH_PODMAN="$TARGET_DIR/debug/with-podman"
[ -x "$WITH_PODMAN" ] || cargo build -p ironroot-testkit --bin with-podman
export IRONROOT_SWTPM_BACKEND=container
if cargo nextest --version >/dev/null 2>&1; then
  "$WITH_PODMAN" -- cargo nextest run --workspace --no-fail-fast --failure-output final \
    -E 'package(ironroot-tpm) | package(ironroot-testkit)'
else
  "$WITH_PODMAN" -- cargo test --no-fail-fast -p ironroot-tpm -p ironroot-testkit
fi

# The Debian packages (docs/packaging.md#the-test): installed on this machine
# with dpkg, the units checked, the server and the agent run as their units
# would, then purged. It packages the dev binaries the first nextest run built
# (--prebuilt), so no second compile; `make deb` is what builds release packages.
echo "== Debian packages: install, run as the units would, purge (scripts/deb-test.sh)"
bash scripts/deb-test.sh --prebuilt
