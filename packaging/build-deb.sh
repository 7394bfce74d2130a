#!/usr/bin/env bash
# Builds the Debian packages ironroot-server and ironroot-agent from a staged
# tree with dpkg-deb (docs/packaging.md).
#
#   packaging/build-deb.sh [--profile release|dev] [--no-build] [--out DIR]
#
# --profile  the cargo profile whose binaries are packaged (default: release,
#            what `make deb` ships; scripts/deb-test.sh packages dev binaries)
# --no-build package the binaries already in the target directory
# --out      where the .deb files go (default: <target dir>/debian)
#
# Each binary is built on its own (`cargo build -p <crate>`), so each has its
# crate's default features only (the edge agent without cloud/k8s).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

profile=release
build=1
out=
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --out) out=$2; shift 2 ;;
    *) echo "build-deb: unknown argument $1 (see the head of $0)" >&2; exit 2 ;;
  esac
done
# xz for what ships; the test's dev packages (64 MB binaries) only need to
# exist for a minute, and xz would take minutes on two cores.
case "$profile" in
  release) profile_dir=release compress=(-Zxz) ;;
  dev) profile_dir=debug compress=(-Zgzip -z1) ;;
  *) echo "build-deb: --profile must be release or dev, not $profile" >&2; exit 2 ;;
esac

metadata=$(cargo metadata --locked --no-deps --format-version 1)
target_dir=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' <<<"$metadata")
version=$(python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "ironroot-server"))' <<<"$metadata")
arch=$(dpkg --print-architecture)
out=${out:-$target_dir/debian}
stage_root="$target_dir/debian-stage"
mkdir -p "$out"

for crate in ironroot-server ironroot-agent; do
  if [ "$build" = 1 ]; then
    echo "build-deb: cargo build --profile $profile -p $crate"
    cargo build --locked --profile "$profile" -p "$crate" --bin "$crate"
  fi
  [ -x "$target_dir/$profile_dir/$crate" ] || {
    echo "build-deb: $target_dir/$profile_dir/$crate is missing (build it, or drop --no-build)" >&2; exit 1; }
done

# stage <package> <what it is, one line> <section>
stage() {
  local pkg=$1 summary=$2 section=$3
  local role=${pkg#ironroot-}
  local dir="$stage_root/$pkg"
  rm -rf "$dir"
  install -d -m 0755 "$dir/DEBIAN" "$dir/usr/bin" "$dir/lib/systemd/system" "$dir/etc/ironroot" \
    "$dir/usr/share/doc/$pkg/examples"
  # Debug info out (Debian policy: binaries stripped), symbols kept so a panic's
  # backtrace still names functions.
  strip --strip-debug --remove-section=.comment --remove-section=.note \
    -o "$dir/usr/bin/$pkg" "$target_dir/$profile_dir/$pkg"
  chmod 0755 "$dir/usr/bin/$pkg"
  install -m 0644 "packaging/systemd/$pkg.service" "$dir/lib/systemd/system/$pkg.service"
  install -m 0640 "packaging/etc/$role.toml" "$dir/etc/ironroot/$role.toml"
  install -m 0644 "conf/$role.toml" "$dir/usr/share/doc/$pkg/examples/$role.toml"
  install -m 0644 docs/packaging.md "$dir/usr/share/doc/$pkg/packaging.md"
  install -m 0644 README.md "$dir/usr/share/doc/$pkg/README.md"
  python3 packaging/licenses.py "$pkg" "$dir/usr/share/doc/$pkg/copyright" \
    "$dir/usr/share/doc/$pkg/third-party-licenses"
  gzip -9n "$dir/usr/share/doc/$pkg/third-party-licenses"
  chmod 0644 "$dir/usr/share/doc/$pkg/copyright" "$dir/usr/share/doc/$pkg/third-party-licenses.gz"
  # A native package's changelog (Debian policy 12.7).
  printf '%s (%s) unstable; urgency=medium\n\n  * Built from ironroot %s.\n\n -- ironroot <ironroot@localhost>  %s\n' \
    "$pkg" "$version" "$(git -C "$root" describe --always --dirty 2>/dev/null || echo "$version")" \
    "$(date -R -d "@${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || date +%s)}")" \
    | gzip -9n > "$dir/usr/share/doc/$pkg/changelog.gz"
  chmod 0644 "$dir/usr/share/doc/$pkg/changelog.gz"
  for script in postinst prerm postrm; do
    install -m 0755 "packaging/$pkg/$script" "$dir/DEBIAN/$script"
  done
  echo "/etc/ironroot/$role.toml" > "$dir/DEBIAN/conffiles"

  # Shared libraries the binary loads, as Debian dependencies (dpkg-shlibdeps
  # reads a debian/control in its working directory).
  local work
  work=$(mktemp -d)
  mkdir "$work/debian"
  printf 'Source: ironroot\n\nPackage: %s\nArchitecture: any\n' "$pkg" > "$work/debian/control"
  local shlibs
  shlibs=$(cd "$work" && dpkg-shlibdeps -O "$dir/usr/bin/$pkg" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
  rm -rf "$work"
  [ -n "$shlibs" ] || { echo "build-deb: dpkg-shlibdeps found no dependencies for $pkg" >&2; exit 1; }
  local depends=$shlibs extra
  case "$pkg" in
    # adduser makes the ironroot user in postinst.
    ironroot-server) depends="adduser, $depends"; extra="Suggests: softhsm2, opensc" ;;
    # The TCTI modules are dlopen()ed by libtss2-tctildr (invisible to the
    # linker): device for /dev/tpmrm0, swtpm for a software TPM.
    ironroot-agent) depends="$depends, libtss2-tcti-device0"; extra="Suggests: tpm2-tools" ;;
  esac
  local size
  size=$(du -sk --exclude=DEBIAN "$dir" | cut -f1)
  (cd "$dir" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum) \
    > "$dir/DEBIAN/md5sums"
  cat > "$dir/DEBIAN/control" <<CONTROL
Package: $pkg
Version: $version
Architecture: $arch
Maintainer: ironroot <ironroot@localhost>
Installed-Size: $size
Depends: $depends
$extra
Section: $section
Priority: optional
Description: $summary
$(sed 's/^/ /' "packaging/$pkg/description")
CONTROL
  dpkg-deb --root-owner-group "${compress[@]}" --build "$dir" "$out/${pkg}_${version}_${arch}.deb" >/dev/null
  echo "build-deb: $out/${pkg}_${version}_${arch}.deb ($profile)"
}

stage ironroot-server "SPIFFE server with its CA keys in a PKCS#11 HSM" admin
stage ironroot-agent "SPIFFE agent bootstrapped by the machine's TPM 2.0" admin
