#!/usr/bin/env bash
# Boots the edge image (target/image) under QEMU (TCG) with OVMF and a swtpm
# TPM on a unix socket, and waits until the guest powers off or the timeout.
#   images/boot.sh STATE_DIR [KERNEL_ARG...]
# STATE_DIR keeps the TPM's state across boots (the same "machine"); if it has
# none yet, swtpm_setup makes a TPM with an EK certificate from a local CA in
# STATE_DIR/ca and writes the CA chain to STATE_DIR/ek-ca.pem (the server's
# node_attestors.tpm.ek_ca_bundle). Environment:
#   IMAGE_DIR (target/image)  BOOT_OUT (IMAGE_DIR/boot)  BOOT_TIMEOUT (300 s)  BOOT_MEM (512 MiB)
#   BOOT_KERNEL (IMAGE_DIR/vmlinuz)  the kernel to boot (images/sign-kernel.sh's output, say)
#   BOOT_SECURE_BOOT=1   OVMF's Secure Boot build (SMM) with the snakeoil keys enrolled
#                        (OVMF_VARS_4M.snakeoil.fd): only a kernel signed with that key
#                        boots verified; any other is booted unverified (OVMF's fallback)
#   BOOT_SETUP_ONLY=1    make the TPM in STATE_DIR if needed, and do not boot
#   BOOT_UNTIL_EVENTLOG=1  stop the guest once its event log is out (a golden boot)
# STATE_DIR/disk is the machine's persistent disk: shared with the guest over
# 9p (tag ironroot-state), mounted on /var/lib/ironroot by the image's /init.
# In BOOT_OUT: console.log (ttyS0), data.log (ttyS1), swtpm.log, and
# binary_bios_measurements, the guest's firmware event log taken from ttyS1.
# Exit status: 0 when the guest powered off (or was stopped after its event
# log), 124 on timeout.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[ $# -ge 1 ] || { sed -n '2,15p' "$0" >&2; exit 2; }
mkdir -p "$1"
state=$(cd "$1" && pwd)
shift
image=${IMAGE_DIR:-$root/target/image}
out=${BOOT_OUT:-$image/boot}
timeout=${BOOT_TIMEOUT:-300}
mem=${BOOT_MEM:-512}
ovmf=/usr/share/OVMF
kernel=${BOOT_KERNEL:-$image/vmlinuz}
if [ "${BOOT_SECURE_BOOT:-0}" = 1 ]; then
  code=$ovmf/OVMF_CODE_4M.secboot.fd vars=$ovmf/OVMF_VARS_4M.snakeoil.fd
  # the Secure Boot build keeps its variables in SMM-protected flash
  machine=(-machine q35,smm=on,accel=tcg -global driver=cfi.pflash01,property=secure,value=on)
else
  code=$ovmf/OVMF_CODE_4M.fd vars=$ovmf/OVMF_VARS_4M.fd
  machine=(-machine q35,smm=off,accel=tcg)
fi

if [ ! -f "$state/tpm2-00.permall" ]; then
  echo "== new TPM in $state (EK certificate from a local CA in $state/ca)"
  mkdir -p "$state/ca"
  printf 'statedir = %s\nsigningkey = %s\nissuercert = %s\ncertserial = %s\n' \
    "$state/ca" "$state/ca/signkey.pem" "$state/ca/issuercert.pem" "$state/ca/certserial" > "$state/ca/localca.conf"
  printf -- '--platform-manufacturer ironroot\n--platform-version 2.1\n--platform-model edge-gateway\n' \
    > "$state/ca/localca.options"
  printf 'create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = %s\ncreate_certs_tool_options = %s\nactive_pcr_banks = sha256\n' \
    "$state/ca/localca.conf" "$state/ca/localca.options" > "$state/ca/swtpm_setup.conf"
  TMPDIR="$state/ca" swtpm_setup --tpm2 --tpmstate "$state" --create-ek-cert --create-platform-cert \
    --lock-nvram --overwrite --config "$state/ca/swtpm_setup.conf" > "$state/ca/setup.log" 2>&1
  cat "$state/ca/swtpm-localca-rootca-cert.pem" "$state/ca/issuercert.pem" > "$state/ek-ca.pem"
fi
[ "${BOOT_SETUP_ONLY:-0}" = 1 ] && exit 0

for f in "$kernel" "$image/initrd.img" "$code" "$vars"; do
  [ -f "$f" ] || { echo "boot.sh: $f missing (make image)" >&2; exit 1; }
done
mkdir -p "$out" "$state/disk"
out=$(cd "$out" && pwd)
rm -f "$out"/{console.log,data.log,swtpm.log,binary_bios_measurements}

# swtpm exits by itself when QEMU closes the channel (--terminate)
sock="$out/swtpm.sock"
rm -f "$sock"
swtpm socket --tpm2 --tpmstate dir="$state" --ctrl type=unixio,path="$sock" \
  --pid file="$out/swtpm.pid" --log file="$out/swtpm.log" --terminate --daemon
for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.05; done
[ -S "$sock" ] || { echo "boot.sh: swtpm did not open $sock" >&2; exit 1; }

cp "$vars" "$out/OVMF_VARS.fd"
started=$(date +%s)
qemu-system-x86_64 "${machine[@]}" -m "$mem" -smp 1 \
  -drive if=pflash,format=raw,unit=0,readonly=on,file="$code" \
  -drive if=pflash,format=raw,unit=1,file="$out/OVMF_VARS.fd" \
  -chardev socket,id=chrtpm,path="$sock" -tpmdev emulator,id=tpm0,chardev=chrtpm \
  -device tpm-crb,tpmdev=tpm0 \
  -netdev user,id=n0 -device e1000,netdev=n0,romfile= \
  -virtfs local,path="$state/disk",mount_tag=ironroot-state,security_model=none,id=state \
  -kernel "$kernel" -initrd "$image/initrd.img" \
  -append "console=ttyS0 panic=-1 quiet $*" \
  -display none -monitor none -no-reboot \
  -serial file:"$out/console.log" -serial file:"$out/data.log" &
qemu=$!
# swtpm ends with QEMU's channel, but not if QEMU never connected
stop() {
  kill "$qemu" 2>/dev/null || true
  wait "$qemu" 2>/dev/null || true
  [ -f "$out/swtpm.pid" ] && kill "$(cat "$out/swtpm.pid")" 2>/dev/null || true
}
trap stop EXIT
status=124
while [ $(($(date +%s) - started)) -lt "$timeout" ]; do
  if ! kill -0 "$qemu" 2>/dev/null; then
    wait "$qemu" && status=0 || status=$?
    break
  fi
  if [ "${BOOT_UNTIL_EVENTLOG:-0}" = 1 ] && grep -q ironroot-eventlog-end "$out/data.log" 2>/dev/null; then
    kill "$qemu"; wait "$qemu" || true; status=0
    break
  fi
  sleep 0.5
done
echo "== guest ran $(($(date +%s) - started)) s ($([ "$status" = 124 ] && echo "timed out" || echo "exit $status")); logs in $out"

# the event log between its markers on ttyS1 (OVMF's escape codes around it)
if grep -q ironroot-eventlog-end "$out/data.log" 2>/dev/null; then
  sed -n '/ironroot-eventlog-begin/,/ironroot-eventlog-end/p' "$out/data.log" | tr -d '\r' |
    grep -v ironroot-eventlog | base64 -d > "$out/binary_bios_measurements"
  echo "== event log: $out/binary_bios_measurements ($(stat -c %s "$out/binary_bios_measurements") bytes)"
fi
exit "$status"
