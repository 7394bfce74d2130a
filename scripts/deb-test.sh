#!/usr/bin/env bash
# The Debian packages on this machine (docs/packaging.md#the-test): builds them
# from dev binaries, installs them with dpkg, checks the units with
# `systemd-analyze verify` and `security --offline`, the files, modes, users and
# conffiles, then starts the server and the agent as their units would (no
# systemd runs here: the unit's User, groups, capability bounding set,
# NoNewPrivileges, LimitNOFILE, UMask and directories applied by setpriv and
# prlimit, ExecStart as written) on the packaged configuration edited only where
# an operator must: the server answers `healthcheck`, the agent attests with a
# join token and serves an SVID to a workload of another uid (nobody). Then both
# stop, the packages are purged, and nothing of them is left: no process, file,
# directory or user. Run as root (make test calls it last). Packages already
# installed (a previous run that died) are purged first.
#
#   scripts/deb-test.sh [--prebuilt | --debs DIR]
#
# --prebuilt: package target/debug's binaries as they are (make test: its
# nextest run has just built them from this tree, so CI pays for no second
# compile). Without it they are built first, as `make demo` builds them.
# --debs DIR: test the packages already in DIR (e.g. target/debian after
# `make deb`) instead of building any.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

say() { echo "deb-test: $*"; }
fail() { echo "deb-test: FAILED: $*" >&2; exit 1; }

if [ "$(id -u)" -ne 0 ]; then
  [ "${CI:-}" = true ] && fail "must run as root (it installs packages)"
  say "skipped: not root (it installs packages; make test runs it as root in CI)"
  exit 0
fi

# One run at a time on this machine: the packages, /etc/ironroot and
# /run/ironroot are the machine's.
exec 9>/run/lock/ironroot-deb-test.lock
flock -w 900 9 || fail "another deb-test held /run/lock/ironroot-deb-test.lock for 15 minutes"

work=$(mktemp -d /tmp/ironroot-deb-test.XXXXXX)
chmod 0755 "$work"
td=deb-test.ironroot.test
pids=()

# stop_started: the processes this script started, by PID.
stop_started() {
  local pid
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  pids=()
}

# purge: the packages, what the test added beside them (operator files dpkg
# does not own), and the ironroot user, which Debian's purge keeps.
purge() {
  rm -f /etc/ironroot/hsm.pin /etc/ironroot/bundle.pem
  local installed
  installed=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' ironroot-agent ironroot-server 2>/dev/null |
    awk '$2 != "not-installed" {print $1}' || true)
  if [ -n "$installed" ]; then
    dpkg --purge $installed >"$work/purge.log" 2>&1 || { cat "$work/purge.log" >&2; return 1; }
  fi
  if getent passwd ironroot >/dev/null; then deluser --system --quiet ironroot >/dev/null 2>&1; fi
  if getent group ironroot >/dev/null; then delgroup --system --quiet ironroot >/dev/null; fi
}

cleanup() {
  local rc=$?
  stop_started
  if [ $rc -ne 0 ]; then
    for log in "$work"/*.log; do
      [ -s "$log" ] && { echo "--- $log (last 30 lines)" >&2; tail -n 30 "$log" >&2; }
    done
  fi
  purge || echo "deb-test: purge failed; the packages may still be installed" >&2
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT

# running_packaged: PIDs running the packaged binaries (/usr/bin/ironroot-*).
running_packaged() {
  local exe p
  for exe in /proc/[0-9]*/exe; do
    case "$(readlink "$exe" 2>/dev/null)" in
      /usr/bin/ironroot-*) p=${exe#/proc/}; echo "${p%/exe}" ;;
    esac
  done
}
# A run killed outright may have left its server or agent running: they are
# not this run's to kill, and would hold the sockets and the port.
stale=$(running_packaged | paste -sd' ' -)
[ -z "$stale" ] || fail "processes already run /usr/bin/ironroot-* (PIDs $stale): stop them first"

if dpkg-query -W -f='${db:Status-Status}\n' ironroot-server ironroot-agent 2>/dev/null | grep -qv not-installed; then
  say "ironroot packages are installed (a previous run?): purging them first"
fi
purge

case "${1:-}" in
  --debs)
    [ -n "${2:-}" ] || fail "--debs needs a directory"
    debs_dir=$(cd "$2" && pwd) ;;
  *)
    if [ "${1:-}" != --prebuilt ]; then
      say "cargo build -p ironroot-server -p ironroot-agent"
      cargo build --locked -p ironroot-server -p ironroot-agent >"$work/cargo.log" 2>&1 ||
        { cat "$work/cargo.log" >&2; fail "cargo build"; }
    fi
    say "building the packages from dev binaries"
    debs_dir="$work/debs"
    packaging/build-deb.sh --profile dev --no-build --out "$debs_dir" >"$work/build.log" 2>&1 ||
      { cat "$work/build.log" >&2; fail "packaging/build-deb.sh"; } ;;
esac
debs=("$debs_dir"/ironroot-server_*.deb "$debs_dir"/ironroot-agent_*.deb)
[ -f "${debs[0]}" ] && [ -f "${debs[1]}" ] || fail "build-deb made no packages: ${debs[*]}"

say "dpkg -i ${debs[*]##*/}"
dpkg -i "${debs[@]}" >"$work/install.log" 2>&1 || { cat "$work/install.log" >&2; fail "dpkg -i"; }
for pkg in ironroot-server ironroot-agent; do
  status=$(dpkg-query -W -f='${Status}' "$pkg")
  [ "$status" = "install ok installed" ] || fail "$pkg: dpkg says '$status'"
done

say "the units: systemd-analyze verify (clean) and security --offline"
for unit in ironroot-server ironroot-agent; do
  file=/lib/systemd/system/$unit.service
  out=$(systemd-analyze verify --man=no "$file" 2>&1) || fail "systemd-analyze verify $file: $out"
  [ -z "$out" ] || fail "systemd-analyze verify $file is not clean: $out"
done
# Exposure levels (0 best, 10 worst) as measured when the units were written
# (server 1.6, agent 2.8): a hardening line lost raises them past these.
systemd-analyze security --offline=yes --threshold=20 --no-pager \
  /lib/systemd/system/ironroot-server.service >"$work/security-server.txt" 2>&1 ||
  fail "ironroot-server.service: exposure above 2.0 ($(grep Overall "$work/security-server.txt"))"
systemd-analyze security --offline=yes --threshold=30 --no-pager \
  /lib/systemd/system/ironroot-agent.service >"$work/security-agent.txt" 2>&1 ||
  fail "ironroot-agent.service: exposure above 3.0 ($(grep Overall "$work/security-agent.txt"))"

# unit_value <unit> <Key>: the last value the unit file gives Key.
unit_value() {
  sed -n "s/^$2=//p" "/lib/systemd/system/$1.service" | tail -n 1
}
[ "$(unit_value ironroot-server User)" = ironroot ] || fail "ironroot-server.service does not run as ironroot"
[ -z "$(unit_value ironroot-server CapabilityBoundingSet)" ] || fail "ironroot-server.service keeps capabilities"
[ "$(unit_value ironroot-server ExecStart)" = "/usr/bin/ironroot-server run --config /etc/ironroot/server.toml" ] ||
  fail "ironroot-server.service: ExecStart is $(unit_value ironroot-server ExecStart)"
[ "$(unit_value ironroot-agent ExecStart)" = "/usr/bin/ironroot-agent run --config /etc/ironroot/agent.toml" ] ||
  fail "ironroot-agent.service: ExecStart is $(unit_value ironroot-agent ExecStart)"
[ "$(unit_value ironroot-agent DeviceAllow)" = "/dev/tpmrm0 rw" ] || fail "ironroot-agent.service: DeviceAllow"

say "files, modes, owners, conffiles, the user, dependencies"
# expect_path <path> <mode> <owner:group>
expect_path() {
  [ -e "$1" ] || fail "$1 is missing"
  local got
  got=$(stat -c '%a %U:%G' "$1")
  [ "$got" = "$2 $3" ] || fail "$1 is $got, expected $2 $3"
}
expect_path /usr/bin/ironroot-server 755 root:root
expect_path /usr/bin/ironroot-agent 755 root:root
expect_path /lib/systemd/system/ironroot-server.service 644 root:root
expect_path /lib/systemd/system/ironroot-agent.service 644 root:root
expect_path /etc/ironroot 755 root:root
expect_path /etc/ironroot/server.toml 640 root:ironroot
expect_path /etc/ironroot/agent.toml 640 root:root
expect_path /var/lib/ironroot/server 750 ironroot:ironroot
expect_path /var/lib/ironroot/agent 700 root:root
for pkg in ironroot-server ironroot-agent; do
  expect_path "/usr/share/doc/$pkg/copyright" 644 root:root
  expect_path "/usr/share/doc/$pkg/changelog.gz" 644 root:root
  head -n 1 "/usr/share/doc/$pkg/copyright" | grep -q '^Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/' ||
    fail "$pkg: copyright is not in Debian's machine-readable format"
  grep -q '^ ring [0-9.]*: Apache-2.0 AND ISC$' "/usr/share/doc/$pkg/copyright" ||
    fail "$pkg: copyright does not list the crates linked in (ring)"
  zgrep -q '^==== ring ' "/usr/share/doc/$pkg/third-party-licenses.gz" ||
    fail "$pkg: third-party-licenses.gz lacks ring's license"
  ldd "/usr/bin/$pkg" | grep -q 'not found' && fail "/usr/bin/$pkg: $(ldd "/usr/bin/$pkg" | grep 'not found')"
  dpkg-query -W -f='${Conffiles}\n' "$pkg" | grep -q "^ /etc/ironroot/${pkg#ironroot-}.toml " ||
    fail "$pkg: /etc/ironroot/${pkg#ironroot-}.toml is not a conffile"
  dpkg --verify "$pkg" >"$work/verify.log" 2>&1 || fail "dpkg --verify $pkg: $(cat "$work/verify.log")"
done
dpkg-query -W -f='${Depends}' ironroot-agent | grep -q 'libtss2-esys' || fail "ironroot-agent does not depend on libtss2-esys"
dpkg-query -W -f='${Depends}' ironroot-agent | grep -q 'libtss2-tcti-device0' ||
  fail "ironroot-agent does not depend on the device TCTI it dlopen()s"
dpkg-query -W -f='${Depends}' ironroot-server | grep -q softhsm && fail "ironroot-server depends on softhsm2 (the HSM is the operator's choice)"
IFS=: read -r _ _ uid gid _ home shell < <(getent passwd ironroot) || fail "no user ironroot"
[ "$uid" -lt 1000 ] || fail "ironroot is not a system user (uid $uid)"
[ "$shell" = /usr/sbin/nologin ] || fail "ironroot's shell is $shell"
[ "$(getent group "$gid" | cut -d: -f1)" = ironroot ] || fail "ironroot's group is not ironroot"
say "ironroot: uid $uid, home $home, shell $shell"

# start_as_unit <unit> <log> [VAR=value...]: ExecStart of the unit as systemd
# would run it, as far as these settings go: its RuntimeDirectory and
# StateDirectory (owner, mode), User/Group with the user's groups plus
# SupplementaryGroups, CapabilityBoundingSet, NoNewPrivileges, LimitNOFILE,
# UMask, and the environment systemd gives a service. The PID joins pids.
start_as_unit() {
  local unit=$1 log=$2
  shift 2
  local user group supp caps nofile umask_ exec_start
  user=$(unit_value "$unit" User)
  group=$(unit_value "$unit" Group)
  group=${group:-$(id -gn "$user")}
  supp=$(unit_value "$unit" SupplementaryGroups)
  caps=$(unit_value "$unit" CapabilityBoundingSet)
  nofile=$(unit_value "$unit" LimitNOFILE)
  # Without CAP_SYS_RESOURCE (a container) the hard limit cannot be raised:
  # the unit's limit is then capped at this machine's, and the check says so.
  if [ -n "$nofile" ] && [ "$nofile" -gt "$(ulimit -Hn)" ] && ! prlimit --nofile="$nofile:$nofile" true 2>/dev/null; then
    say "$unit: LimitNOFILE=$nofile capped at this machine's hard limit $(ulimit -Hn) (no CAP_SYS_RESOURCE here)"
    nofile=$(ulimit -Hn)
  fi
  started_nofile=$nofile
  local limits=()
  [ -n "$nofile" ] && limits=(prlimit --nofile="$nofile:$nofile" --)
  umask_=$(unit_value "$unit" UMask)
  exec_start=$(unit_value "$unit" ExecStart)
  local kind dirs dir mode base g c
  for kind in Runtime State; do
    dirs=$(unit_value "$unit" "${kind}Directory")
    mode=$(unit_value "$unit" "${kind}DirectoryMode")
    [ $kind = Runtime ] && base=/run || base=/var/lib
    for dir in $dirs; do
      install -d -m "${mode:-0755}" -o "$user" -g "$group" "$base/$dir"
    done
  done
  local groups
  groups=$(id -G "$user" | tr ' ' '\n')
  for g in $supp; do groups+=$'\n'$(getent group "$g" | cut -d: -f3); done
  groups=$(sort -un <<<"$groups" | paste -sd, -)
  local bset=-all
  for c in $caps; do bset+=",+$(tr 'A-Z' 'a-z' <<<"${c#CAP_}")"; done
  local nnp=()
  [ "$(unit_value "$unit" NoNewPrivileges)" = yes ] && nnp=(--no-new-privs)
  local home
  home=$(getent passwd "$user" | cut -d: -f6)
  # shellcheck disable=SC2086 # ExecStart is split into words as systemd does (no quotes in ours)
  (
    umask "${umask_:-0022}"
    exec env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
      USER="$user" LOGNAME="$user" HOME="$home" SHELL=/usr/sbin/nologin \
      RUNTIME_DIRECTORY="/run/$(unit_value "$unit" RuntimeDirectory | cut -d' ' -f1)" \
      STATE_DIRECTORY="/var/lib/$(unit_value "$unit" StateDirectory)" "$@" \
      "${limits[@]}" \
      setpriv --reuid="$user" --regid="$group" --groups="$groups" --inh-caps=-all \
      --bounding-set="$bset" "${nnp[@]}" -- $exec_start
  ) >"$log" 2>&1 &
  pids+=($!)
  started_pid=$!
}

# proc_field <pid> <field>: a line of /proc/PID/status.
proc_field() { awk -v f="$2:" '$1 == f {$1=""; print substr($0, 2)}' "/proc/$1/status"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port_free() { python3 -c 'import socket,sys; s=socket.socket(); s.bind(("0.0.0.0",int(sys.argv[1])))' "$1" 2>/dev/null; }

say "the server: a SoftHSM token for ironroot, the packaged server.toml with a trust domain"
# The token in a directory of its own (the machine's /var/lib/softhsm is left
# alone), named to the server by SOFTHSM2_CONF, as a drop-in's Environment= would.
install -d -m 0700 -o ironroot -g ironroot "$work/softhsm" "$work/softhsm/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
  "$work/softhsm/tokens" >"$work/softhsm/softhsm2.conf"
chmod 0644 "$work/softhsm/softhsm2.conf"
runuser -u ironroot -- env SOFTHSM2_CONF="$work/softhsm/softhsm2.conf" softhsm2-util --init-token --free \
  --label ironroot --so-pin 87654321 --pin 123456 >"$work/softhsm.log" 2>&1 ||
  fail "softhsm2-util --init-token as ironroot: $(cat "$work/softhsm.log")"
(umask 077 && printf '123456\n' >/etc/ironroot/hsm.pin)
chown ironroot:ironroot /etc/ironroot/hsm.pin
# What an operator edits: the trust domain. The Node API's port stays the
# packaged 8081 unless something on this machine holds it.
sed -i "s/^trust_domain = .*/trust_domain = \"$td\"/" /etc/ironroot/server.toml
port=8081
if ! port_free $port; then
  port=$(free_port)
  say "port 8081 is taken on this machine: the server listens on $port"
  sed -i "s/^listen = \"0.0.0.0:8081\"/listen = \"127.0.0.1:$port\"/" /etc/ironroot/server.toml
fi
grep -q "^trust_domain = \"$td\"" /etc/ironroot/server.toml || fail "server.toml has no trust_domain line to set"

# An upgrade (here a reinstall) keeps the operator's edit of a conffile, and
# postinst puts its group and mode back.
dpkg -i "${debs[0]}" >"$work/reinstall.log" 2>&1 || { cat "$work/reinstall.log" >&2; fail "dpkg -i again"; }
grep -q "^trust_domain = \"$td\"" /etc/ironroot/server.toml || fail "reinstalling lost the edit of server.toml"
expect_path /etc/ironroot/server.toml 640 root:ironroot

start_as_unit ironroot-server "$work/server.log" SOFTHSM2_CONF="$work/softhsm/softhsm2.conf"
server_pid=$started_pid
for _ in $(seq 1 300); do
  ironroot-server healthcheck >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || fail "the server exited during start-up (log above)"
  sleep 0.2
done
ironroot-server healthcheck >"$work/health.txt" 2>&1 || fail "healthcheck: $(cat "$work/health.txt")"
say "healthcheck: $(head -n 1 "$work/health.txt")"
[ "$(readlink "/proc/$server_pid/exe")" = /usr/bin/ironroot-server ] || fail "PID $server_pid is not /usr/bin/ironroot-server"
[ "$(proc_field "$server_pid" Uid | awk '{print $2}')" = "$uid" ] || fail "the server does not run as ironroot"
[ "$(proc_field "$server_pid" CapBnd)" = 0000000000000000 ] || fail "the server has capabilities: $(proc_field "$server_pid" CapBnd)"
[ "$(proc_field "$server_pid" NoNewPrivs)" = 1 ] || fail "the server may gain privileges"
[ "$(unit_value ironroot-server LimitNOFILE)" = 65536 ] || fail "ironroot-server.service: LimitNOFILE is not 65536"
grep -q "^Max open files *$started_nofile *$started_nofile " "/proc/$server_pid/limits" ||
  fail "the server's open-file limit is not $started_nofile: $(grep 'open files' "/proc/$server_pid/limits")"
expect_path /run/ironroot/server/admin.sock 600 ironroot:ironroot
[ -n "$(ls /var/lib/ironroot/server)" ] || fail "the server wrote nothing in /var/lib/ironroot/server"

say "the agent: the packaged agent.toml with the server, its bundle and a join token"
ironroot-server bundle show >/etc/ironroot/bundle.pem
token=$(ironroot-server token generate --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
sed -i -e "s/^trust_domain = .*/trust_domain = \"$td\"/" \
  -e "s/^server_address = .*/server_address = \"127.0.0.1:$port\"/" \
  -e "s/^node_attestor = .*/node_attestor = \"join_token\"\njoin_token = \"$token\"/" /etc/ironroot/agent.toml
grep -q "^join_token = \"$token\"" /etc/ironroot/agent.toml || fail "agent.toml has no node_attestor line to set"
start_as_unit ironroot-agent "$work/agent.log"
agent_pid=$started_pid
agent_id=
for _ in $(seq 1 300); do
  agent_id=$(ironroot-server agent list --output json 2>/dev/null |
    python3 -c 'import json,sys; a=json.load(sys.stdin)["agents"]; print(a[0]["spiffe_id"] if a else "")' || true)
  [ -n "$agent_id" ] && break
  kill -0 "$agent_pid" 2>/dev/null || fail "the agent exited (log above)"
  sleep 0.2
done
[ -n "$agent_id" ] || fail "the agent did not attest in 60 s"
say "the agent attested: $agent_id"
[ "$(proc_field "$agent_pid" CapEff)" = 0000000000080004 ] ||
  fail "the agent's capabilities are $(proc_field "$agent_pid" CapEff), not CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"
proc_field "$agent_pid" Groups | tr ' ' '\n' | grep -qx "$(getent group tss | cut -d: -f3)" ||
  fail "the agent is not in group tss"
[ "$(proc_field "$agent_pid" NoNewPrivs)" = 1 ] || fail "the agent may gain privileges"

say "a workload of uid nobody fetches its X.509-SVID from /run/ironroot/agent/public/api.sock"
workload_id="spiffe://$td/workload/nobody"
ironroot-server entry create --spiffe-id "$workload_id" --parent-id "$agent_id" \
  --selector "unix:uid:$(id -u nobody)" >"$work/entry.log" 2>&1 || fail "entry create: $(cat "$work/entry.log")"
fetched=
for _ in $(seq 1 150); do
  if setpriv --reuid=nobody --regid=nogroup --clear-groups -- /usr/bin/ironroot-agent api fetch x509 \
    -s /run/ironroot/agent/public/api.sock --output json >"$work/fetch.json" 2>"$work/fetch.log"; then
    fetched=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["svids"][0]["spiffe_id"])' <"$work/fetch.json")
    break
  fi
  kill -0 "$agent_pid" 2>/dev/null || fail "the agent exited (log above)"
  sleep 0.2
done
[ "$fetched" = "$workload_id" ] || fail "the workload got '${fetched}' ($(cat "$work/fetch.log"))"
say "the workload got $fetched"

say "stopping both; dpkg -r keeps configuration and state, dpkg --purge removes them"
stop_started
dpkg -r ironroot-agent ironroot-server >"$work/remove.log" 2>&1 || { cat "$work/remove.log" >&2; fail "dpkg -r"; }
for path in /usr/bin/ironroot-server /usr/bin/ironroot-agent /lib/systemd/system/ironroot-server.service; do
  [ ! -e "$path" ] || fail "$path is left after dpkg -r"
done
grep -q "^trust_domain = \"$td\"" /etc/ironroot/server.toml || fail "dpkg -r removed the edited server.toml"
[ -f /etc/ironroot/agent.toml ] || fail "dpkg -r removed agent.toml"
[ -n "$(ls /var/lib/ironroot/server)" ] || fail "dpkg -r removed the server's state"
purge
left=$(running_packaged | paste -sd' ' -)
[ -z "$left" ] || fail "still running /usr/bin/ironroot-* after stopping both: PIDs $left"
for pkg in ironroot-server ironroot-agent; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || echo not-installed)
  [ "$status" = not-installed ] || fail "$pkg is still '$status' after dpkg --purge"
done
for path in /usr/bin/ironroot-server /usr/bin/ironroot-agent /etc/ironroot /var/lib/ironroot /run/ironroot \
  /lib/systemd/system/ironroot-server.service /lib/systemd/system/ironroot-agent.service \
  /usr/share/doc/ironroot-server /usr/share/doc/ironroot-agent; do
  [ ! -e "$path" ] || fail "$path is left after purge"
done
left=$(find /etc/systemd /var/lib/systemd -name '*ironroot*' 2>/dev/null || true)
[ -z "$left" ] || fail "left after purge: $left"
getent passwd ironroot >/dev/null && fail "the ironroot user is left"
say "ok"
