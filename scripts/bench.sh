#!/usr/bin/env bash
# `make bench`: the benchmark binaries (release profile). They print figures;
# docs/benchmarks.md records them with this command.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -p ironroot-server --bench svid_signing
if [ -f tpm/benches/eventlog.rs ]; then
  cargo bench -p ironroot-tpm --bench eventlog
fi
