#!/usr/bin/env bash
# `make bench`: the benchmark binaries (release profile). They print figures;
# docs/benchmarks.md records them with this command.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -p ironroot-server --bench svid_signing
# The CA on OpenBao transit beside raw transit signatures (a local bao dev server).
cargo bench -p ironroot-server --bench transit_signing
# Batch entry creation through the store seam, sled and PostgreSQL (fsync on).
cargo bench -p ironroot-server --bench store_batch
# The attestation bench drives the release server binary.
cargo build --release -p ironroot-server
cargo bench -p ironroot-agent --bench attestation
# The Workload API bench drives the release server and agent binaries.
cargo build --release -p ironroot-server -p ironroot-agent
cargo bench -p ironroot-agent --bench workload_api
cargo bench -p ironroot-agent --bench sds
# Fleet scale: 100,000 entries, 10,000 simulated agents over mTLS against the release server
# (IRONROOT_BENCH_ENTRIES / _AGENTS / _SECONDS make it smaller).
cargo bench -p ironroot-agent --bench fleet
# The same on PostgreSQL (fsync on) with two servers sharing it, smaller: half the agents on
# each server, entries created through the first (docs/benchmarks.md).
IRONROOT_BENCH_STORE=postgres IRONROOT_BENCH_SERVERS=2 IRONROOT_BENCH_ENTRIES=20000 \
  IRONROOT_BENCH_AGENTS=2000 cargo bench -p ironroot-agent --bench fleet
cargo bench -p ironroot-tpm --bench eventlog
# One process, one SoftHSM token: the bench sets SOFTHSM2_CONF for itself (its helper
# insists on a single test thread, which a bench binary's main is).
RUST_TEST_THREADS=1 cargo bench -p ironroot-hsm --bench sign_rate
cargo bench -p ironroot-agent --bench h2_authority
# Boot → attested → workload SVID under QEMU (TCG): the release agent in the edge image,
# the release server on the host.
cargo build --release -p ironroot-server -p ironroot-agent
cargo bench -p ironroot-qemu-tests --bench boot_to_svid
