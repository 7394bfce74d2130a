#!/usr/bin/env bash
# `make image`: the edge gateway image. The Debian kernel (linux-image-amd64)
# plus an initramfs holding static busybox, the release ironroot-agent with its
# ldd-resolved libraries and the TPM device TCTI, the e1000 module, and an init
# script (images/rootfs/init) that brings up the network, starts the agent and
# runs the demo workload. Output in target/image/ (layout: images/README.md).
#
# Build-time inputs (environment; all optional):
#   IRONROOT_BUNDLE        PEM bootstrap trust bundle (`ironroot-server bundle show`),
#                          installed as /etc/ironroot/bootstrap-bundle.pem. Without it the
#                          image boots but the agent cannot attest.
#   IRONROOT_SERVER        default server address (10.0.2.2:8081); the kernel command line
#                          `ironroot.server=HOST:PORT` overrides it at boot.
#   IRONROOT_TRUST_DOMAIN  default trust domain (edge.ironroot.test); `ironroot.trust_domain=`
#                          overrides it.
#   IRONROOT_AGENT         agent binary to install (default: cargo build --release, then
#                          target/release/ironroot-agent).
#   IRONROOT_ENROLL_DEVID  1: at its first attestation (tpm_ek) the agent asks the server's
#                          DevID CA for an LDevID, kept on the machine's disk; later boots
#                          attest with tpm_devid (0: always tpm_ek).
#   IRONROOT_OVERLAY       a directory copied over the initramfs (site files, e.g. hooks in
#                          etc/ironroot/local.d/ that /init starts after the agent).
#   IMAGE_OUT              output directory (target/image).
# Idempotent: the initramfs is rebuilt from scratch each run, with fixed file
# times and order, so the same inputs give the same initrd.img (and so the same
# PCR 9 initrd digest).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

out=${IMAGE_OUT:-$root/target/image}
agent=${IRONROOT_AGENT:-}
server=${IRONROOT_SERVER:-10.0.2.2:8081}
trust_domain=${IRONROOT_TRUST_DOMAIN:-edge.ironroot.test}

kernel=$(find /boot -maxdepth 1 -name 'vmlinuz-*-amd64' | sort -V | tail -n 1)
[ -n "$kernel" ] || { echo "build.sh: no /boot/vmlinuz-*-amd64 (make image installs linux-image-amd64)" >&2; exit 1; }
kver=${kernel#/boot/vmlinuz-}
if [ -z "$agent" ]; then
  echo "== release ironroot-agent"
  cargo build --release -p ironroot-agent --quiet
  agent=${CARGO_TARGET_DIR:-$root/target}/release/ironroot-agent
fi

stage="$out/rootfs"
rm -rf "$stage"
mkdir -p "$stage"/{bin,etc/ironroot,dev,proc,sys,run,tmp,var/lib,usr/bin,usr/lib/modules,usr/lib64}
# merged /usr as on the host, so ldd's paths are valid inside
ln -s usr/lib "$stage/lib"
ln -s usr/lib64 "$stage/lib64"
ln -s bin "$stage/sbin"
echo "== initramfs for kernel $kver in $stage"

# busybox and its applet links (static: needs nothing else)
cp /bin/busybox "$stage/bin/busybox"
for applet in $(busybox --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$stage/bin/$applet"
done

# a host binary with everything ldd resolves for it, at the same paths
copy_with_libs() {
  local bin=$1 dest=$2 lib
  install -D -m 0755 "$bin" "$stage$dest"
  for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
    install -D -m 0755 "$(readlink -f "$lib")" "$stage$lib"
  done
}
copy_with_libs "$agent" /usr/bin/ironroot-agent
# the release profile keeps line tables: three quarters of the binary, and
# every byte of the initrd is hashed by the kernel's EFI stub under TCG
strip --strip-debug "$stage/usr/bin/ironroot-agent"
# the TCTI is dlopen()ed by tctildr at run time, so ldd does not see it
tcti=/usr/lib/x86_64-linux-gnu/libtss2-tcti-device.so.0
copy_with_libs "$tcti" "$tcti"
echo /usr/lib/x86_64-linux-gnu > "$stage/etc/ld.so.conf"
ldconfig -r "$stage"

# e1000 (QEMU's NIC) and its module dependencies, from the guest kernel's modules.dep
moddir=/lib/modules/$kver
copy_module() {
  local rel dep name
  rel=$(grep -E "(^|/)$1\.ko(\.xz)?:" "$moddir/modules.dep" | head -n 1)
  [ -n "$rel" ] || { echo "build.sh: module $1 not in $moddir/modules.dep" >&2; exit 1; }
  # modules.dep lists a module's dependencies last-loaded-first (modprobe's order)
  for dep in $(printf '%s\n' ${rel#*:} | tac) "${rel%%:*}"; do
    name=$(basename "${dep%.xz}")
    # shared dependencies (virtio for 9p and virtio_pci) are loaded once
    grep -qx "$name" "$stage/lib/modules/load-order" 2>/dev/null && continue
    case $dep in
      *.xz) xz -dc "$moddir/$dep" > "$stage/lib/modules/$(basename "${dep%.xz}")" ;;
      *) cp "$moddir/$dep" "$stage/lib/modules/" ;;
    esac
    echo "$name" >> "$stage/lib/modules/load-order"
  done
}
# the NIC, then the machine's persistent disk (9p over virtio, images/boot.sh)
for module in e1000 virtio_pci 9pnet_virtio 9p; do copy_module "$module"; done

install -m 0755 images/rootfs/init "$stage/init"
install -m 0755 images/rootfs/demo-workload "$stage/usr/bin/demo-workload"
printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$stage/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$stage/etc/group"
printf 'server=%s\ntrust_domain=%s\nenroll_devid=%s\n' "$server" "$trust_domain" \
  "${IRONROOT_ENROLL_DEVID:-0}" > "$stage/etc/ironroot/defaults"
if [ -n "${IRONROOT_BUNDLE:-}" ]; then
  install -m 0644 "$IRONROOT_BUNDLE" "$stage/etc/ironroot/bootstrap-bundle.pem"
fi

if [ -n "${IRONROOT_OVERLAY:-}" ]; then
  cp -a "$IRONROOT_OVERLAY/." "$stage/"
  echo "== overlay $IRONROOT_OVERLAY"
fi

mkdir -p "$out"
cp "$kernel" "$out/vmlinuz"
(cd "$stage" && find . -print0 | LC_ALL=C sort -z | xargs -0 touch -h -d @0 &&
  find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet --reproducible) |
  gzip -9 -n > "$out/initrd.img"
echo "== $out/vmlinuz ($kver) and $out/initrd.img ($(stat -c %s "$out/initrd.img") bytes)"
echo "   server $server, trust domain $trust_domain, bundle ${IRONROOT_BUNDLE:-(none)}," \
  "enroll DevID ${IRONROOT_ENROLL_DEVID:-0}"
