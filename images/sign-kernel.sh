#!/usr/bin/env bash
# Signs the edge image's kernel for a verified Secure Boot under QEMU's direct
# kernel boot (`-kernel`), with the snakeoil db key the Debian ovmf package
# ships (OVMF_VARS_4M.snakeoil.fd enrolls its certificate in db).
#   images/sign-kernel.sh VMLINUZ INITRD OUT [EXPECTED_DIGEST]
#
# Why a pre-patch: before OVMF loads (and measures and verifies) the kernel,
# QEMU writes into its setup header the loader type, heap end, command-line
# pointer and the initrd's address and size. Those bytes are inside the
# Authenticode hash, so a kernel signed as it is on disk fails verification,
# and OVMF then silently boots it through a legacy loader that measures and
# verifies nothing (docs/attestation.md). Writing the same values first makes
# QEMU's patch a no-op, so the signed image is the image OVMF sees.
#
# The values are those of QEMU 7.2's x86_load_linux for a boot-protocol
# >= 2.02 kernel, a q35 machine with BOOT_MEM MiB (512) below 4 GiB and its
# ACPI reserve (0x28000 bytes); the initrd address depends on the initrd's
# size, so sign again whenever the initrd changes.
#
# EXPECTED_DIGEST (hex, optional): the PCR 4 EV_EFI_BOOT_SERVICES_APPLICATION
# digest of a boot of the same kernel and initrd *without* Secure Boot. The
# script fails when the patched image's Authenticode SHA-256 differs: the patch
# would not match QEMU's, and the verified boot would silently fall back.
set -euo pipefail
[ $# -ge 3 ] || { sed -n '2,23p' "$0" >&2; exit 2; }
kernel=$1 initrd=$2 out=$3 expected=${4:-}
mem_mib=${BOOT_MEM:-512}
key=/usr/share/ovmf/PkKek-1-snakeoil.key
cert=/usr/share/ovmf/PkKek-1-snakeoil.pem
for f in "$kernel" "$initrd" "$key" "$cert"; do
  [ -r "$f" ] || { echo "sign-kernel.sh: cannot read $f (make image installs ovmf)" >&2; exit 1; }
done
command -v osslsigncode >/dev/null ||
  { echo "sign-kernel.sh: osslsigncode missing (scripts/install-deps.sh)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$kernel" "$(stat -c %s "$initrd")" "$mem_mib" "$tmp/patched" <<'PY'
import struct, sys
src, initrd_size, mem_mib, dst = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
k = bytearray(open(src, "rb").read())
u16 = lambda o: struct.unpack_from("<H", k, o)[0]
u32 = lambda o: struct.unpack_from("<I", k, o)[0]
if u32(0x202) != 0x53726448:  # "HdrS"
    sys.exit("sign-kernel.sh: %s has no Linux boot protocol header" % src)
protocol = u16(0x206)
if protocol < 0x202 or not k[0x211] & 0x01:
    sys.exit("sign-kernel.sh: boot protocol %#x without LOADED_HIGH: not handled" % protocol)
real_addr, cmdline_addr = 0x10000, 0x20000
if protocol >= 0x20C and u16(0x236) & 0x2:  # XLF_CAN_BE_LOADED_ABOVE_4G
    initrd_max = 0xFFFFFFFF
elif protocol >= 0x203:
    initrd_max = u32(0x22C)
else:
    initrd_max = 0x37FFFFFF
below_4g, acpi_data_size = mem_mib << 20, 0x20000 + 0x8000
if initrd_max >= below_4g - acpi_data_size:
    initrd_max = below_4g - acpi_data_size - 1
struct.pack_into("<I", k, 0x228, cmdline_addr)
k[0x210] = 0xB0                       # type_of_loader: QEMU
k[0x211] |= 0x80                      # CAN_USE_HEAP
struct.pack_into("<H", k, 0x224, cmdline_addr - real_addr - 0x200)
struct.pack_into("<I", k, 0x218, (initrd_max - initrd_size) & ~4095)
struct.pack_into("<I", k, 0x21C, initrd_size)
open(dst, "wb").write(k)
PY
rm -f "$out"
osslsigncode sign -certs "$cert" -key "$key" -pass snakeoil -h sha256 \
  -in "$tmp/patched" -out "$out" > "$tmp/sign.log" 2>&1 ||
  { cat "$tmp/sign.log" >&2; exit 1; }
# the Authenticode digest (what OVMF measures into PCR 4, and what db verifies)
# (verify exits non-zero: the snakeoil certificate is self-signed; only the digest is read)
digest=$({ osslsigncode verify -in "$out" 2>/dev/null || true; } |
  sed -n 's/^Calculated message digest *: *//p' | tr 'A-F' 'a-f' | tr -d ' ')
[ -n "$digest" ] || { echo "sign-kernel.sh: osslsigncode printed no digest for $out" >&2; exit 1; }
echo "$out: signed with $cert, Authenticode sha256 $digest"
if [ -n "$expected" ] && [ "$digest" != "$(echo "$expected" | tr 'A-F' 'a-f')" ]; then
  echo "sign-kernel.sh: the patched kernel's digest $digest is not the one QEMU's boot measured" \
    "($expected): QEMU patches the header differently (another QEMU version or BOOT_MEM?)" >&2
  exit 1
fi
