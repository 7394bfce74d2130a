#!/usr/bin/env bash
# The edge image end to end on this host: a server with its CA keys in
# SoftHSM (as scripts/demo.sh), the image built with that server's bundle, a
# golden boot whose event log (from ttyS1) becomes the `edge-gateway` policy,
# then a second boot of the same image and TPM in which the agent attests with
# tpm_ek and the demo workload gets its X.509-SVID. Everything in
# target/image-demo/; the server is stopped at the end.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
demo="$root/target/image-demo"
td="edge.ironroot.test"
bin=${CARGO_TARGET_DIR:-$root/target}/release
cargo build --release -p ironroot-server -p ironroot-agent --quiet
server="$bin/ironroot-server"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# the same kernel command line for the golden boot and the attested boot (PCR 9)
args=(ironroot.poweroff=1 ironroot.demo_timeout=150)

rm -rf "$demo"
mkdir -p "$demo/softhsm/tokens" "$demo/policies"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
  "$demo/softhsm/tokens" > "$demo/softhsm/softhsm2.conf"
export SOFTHSM2_CONF="$demo/softhsm/softhsm2.conf"
(umask 077 && echo 123456 > "$demo/hsm.pin")
softhsm2-util --init-token --free --label edge --so-pin 87654321 --pin 123456 >/dev/null
echo "== the machine's TPM, its EK certificate from a local CA the server trusts"
BOOT_SETUP_ONLY=1 bash images/boot.sh "$demo/tpm"
write_config() {
  cat > "$demo/server.toml" <<CONF
trust_domain = "$td"
data_dir = "$demo/data"
[admin]
socket_path = "$demo/admin.sock"
[key_manager.pkcs11]
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "edge"
pin_file = "$demo/hsm.pin"
[node_api]
listen = "127.0.0.1:$port"
[node_attestors.tpm]
ek_ca_bundle = "$demo/tpm/ek-ca.pem"
policies_dir = "$demo/policies"
$1
CONF
}
start_server() {
  "$server" run -c "$demo/server.toml" >>"$demo/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 150); do
    "$server" healthcheck -s "$demo/admin.sock" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "server did not start:" >&2; tail -n 20 "$demo/server.log" >&2; exit 1
}
stop_server() { kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; }
trap stop_server EXIT

echo "== server on 127.0.0.1:$port (guest: 10.0.2.2:$port), no policy yet"
write_config ""
start_server
"$server" bundle show -s "$demo/admin.sock" > "$demo/bundle.pem"
stop_server

echo "== image with that bundle"
IMAGE_OUT="$demo/image" IRONROOT_AGENT="$bin/ironroot-agent" IRONROOT_BUNDLE="$demo/bundle.pem" \
  IRONROOT_SERVER="10.0.2.2:$port" IRONROOT_TRUST_DOMAIN="$td" bash images/build.sh

echo "== golden boot: its firmware event log becomes the edge-gateway policy"
IMAGE_DIR="$demo/image" BOOT_OUT="$demo/golden" BOOT_UNTIL_EVENTLOG=1 \
  bash images/boot.sh "$demo/tpm" "${args[@]}"
"$server" policy generate --eventlog "$demo/golden/binary_bios_measurements" \
  --name edge-gateway --output "$demo/policies/edge-gateway.toml"

echo "== server with the policy; boot again: the agent attests, the workload gets its SVID"
write_config 'default_policy = "edge-gateway"'
start_server
IMAGE_DIR="$demo/image" BOOT_OUT="$demo/boot" BOOT_TIMEOUT=400 \
  bash images/boot.sh "$demo/tpm" "${args[@]}" &
boot_pid=$!
# the workload's entry, once the node has attested (its ID names the EK)
agent_id=
for _ in $(seq 1 600); do
  agent_id=$("$server" agent list -s "$demo/admin.sock" | sed -n 's/^SPIFFE ID *: //p' | head -n 1)
  [ -n "$agent_id" ] && break
  kill -0 "$boot_pid" 2>/dev/null || break
  sleep 0.5
done
if [ -n "$agent_id" ]; then
  echo "== node attested as $agent_id; entry for the demo workload (uid 0 on it)"
  "$server" entry create -s "$demo/admin.sock" --spiffe-id "spiffe://$td/edge/demo-workload" \
    --parent-id "$agent_id" --selector unix:uid:0
fi
wait "$boot_pid" || true
grep -a -o -E 'ironroot-(init|workload): .*|ironroot_agent.*(attest|SVID|ERROR).*' "$demo/boot/console.log" | cut -c1-160
if grep -a -q 'ironroot-workload: got X.509-SVID' "$demo/boot/console.log"; then
  echo "== ok: the guest's workload got its X.509-SVID (console: $demo/boot/console.log)"
else
  echo "== the guest's workload got no SVID; console: $demo/boot/console.log, server: $demo/server.log" >&2
  exit 1
fi
