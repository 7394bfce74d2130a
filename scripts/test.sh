#!/usr/bin/env bash
# `make test`: formatting, lints, then every test of the workspace against the
# real components (SoftHSM2, swtpm). Test logs of child processes land in
# target/test-logs/.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast --failure-output final
else
  echo "cargo-nextest not found: using cargo test (tests still run one process per binary)"
  cargo test --workspace --no-fail-fast
fi
