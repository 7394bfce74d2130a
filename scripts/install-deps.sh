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
