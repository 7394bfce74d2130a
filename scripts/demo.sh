#!/usr/bin/env bash
# `make demo`: a SoftHSM token, the server on it (its CA keys in the token),
# a swtpm with a real EK certificate, an agent that attests with tpm_ek (quote,
# event log, measured-boot policy), then a registration entry, an X.509-SVID
# and a JWT-SVID minted by the HSM-held CA. Everything lands in target/demo/;
# the server and swtpm are stopped at the end.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

demo="$root/target/demo"
td="demo.ironroot.test"
spiffe_id="spiffe://$td/workload/demo"
parent_id="spiffe://$td/spire/agent/join_token/demo"
module=/usr/lib/softhsm/libsofthsm2.so

echo "== building ironroot-server and ironroot-agent"
cargo build -p ironroot-server -p ironroot-agent --quiet
server="$root/target/debug/ironroot-server"
agent="$root/target/debug/ironroot-agent"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "== SoftHSM token in $demo/softhsm"
rm -rf "$demo"
mkdir -p "$demo/softhsm/tokens"
cat > "$demo/softhsm/softhsm2.conf" <<CONF
directories.tokendir = $demo/softhsm/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
export SOFTHSM2_CONF="$demo/softhsm/softhsm2.conf"
umask 077
(umask 077 && printf '%s\n' 123456 > "$demo/hsm.pin")
softhsm2-util --init-token --free --label ironroot-demo --so-pin 87654321 --pin 123456 >/dev/null
umask 022

echo "== swtpm with an EK certificate from a local CA ($demo/swtpm)"
mkdir -p "$demo/swtpm/state" "$demo/swtpm/ca"
cat > "$demo/swtpm/localca.conf" <<CONF
statedir = $demo/swtpm/ca
signingkey = $demo/swtpm/ca/signkey.pem
issuercert = $demo/swtpm/ca/issuercert.pem
certserial = $demo/swtpm/ca/certserial
CONF
cat > "$demo/swtpm/localca.options" <<CONF
--platform-manufacturer ironroot-demo
--platform-version 2.1
--platform-model demo
CONF
cat > "$demo/swtpm/swtpm_setup.conf" <<CONF
create_certs_tool = /usr/bin/swtpm_localca
create_certs_tool_config = $demo/swtpm/localca.conf
create_certs_tool_options = $demo/swtpm/localca.options
active_pcr_banks = sha256
CONF
TMPDIR="$demo/swtpm" swtpm_setup --tpm2 --tpmstate "$demo/swtpm/state" --create-ek-cert \
  --create-platform-cert --lock-nvram --overwrite --config "$demo/swtpm/swtpm_setup.conf" >"$demo/swtpm/setup.log" 2>&1
cat "$demo/swtpm/ca/swtpm-localca-rootca-cert.pem" "$demo/swtpm/ca/issuercert.pem" > "$demo/ek-ca.pem"
tpm_port=$(free_port)
swtpm socket --tpm2 --tpmstate dir="$demo/swtpm/state" \
  --server type=tcp,port="$tpm_port",bindaddr=127.0.0.1 --ctrl type=tcp,port=$((tpm_port + 1)),bindaddr=127.0.0.1 \
  --flags not-need-init,startup-clear --pid file="$demo/swtpm/swtpm.pid" --log file="$demo/swtpm/swtpm.log" --daemon
node_port=$(free_port)

cat > "$demo/agent.toml" <<CONF
trust_domain = "$td"
server_address = "127.0.0.1:$node_port"
trust_bundle_path = "$demo/agent-bootstrap-bundle.pem"
data_dir = "$demo/agent"
node_attestor = "tpm_ek"

[tpm]
tcti = "swtpm:host=127.0.0.1,port=$tpm_port"
event_log_path = "$demo/binary_bios_measurements"
ek = "rsa"

[workload_api]
socket_path = "$demo/agent-api.sock"
CONF

echo "== a simulated boot measured into the swtpm, and a policy generated from it"
"$agent" tpm simulate-boot -c "$demo/agent.toml"
mkdir -p "$demo/policies"
"$server" policy generate --eventlog "$demo/binary_bios_measurements" --name demo-boot \
  --output "$demo/policies/demo-boot.toml"

cat > "$demo/server.toml" <<CONF
trust_domain = "$td"
data_dir = "$demo/data"
log_level = "info"

[admin]
socket_path = "$demo/admin.sock"

[ca]
ca_ttl = "24h"
default_x509_svid_ttl = "1h"
default_jwt_svid_ttl = "5m"

[key_manager.pkcs11]
module = "$module"
token_label = "ironroot-demo"
pin_file = "$demo/hsm.pin"

[node_api]
listen = "127.0.0.1:$node_port"

# The audit log's head is signed in the HSM every second here (60 s by default).
[audit]
checkpoint_interval = "1s"

[node_attestors.tpm]
ek_ca_bundle = "$demo/ek-ca.pem"
policies_dir = "$demo/policies"
default_policy = "demo-boot"
CONF

echo "== starting the server (log: $demo/server.log)"
"$server" run -c "$demo/server.toml" >"$demo/server.log" 2>&1 &
server_pid=$!
cleanup() {
  [ -n "${agent_pid:-}" ] && { kill "$agent_pid" 2>/dev/null || true; wait "$agent_pid" 2>/dev/null || true; }
  kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true
  [ -f "$demo/swtpm/swtpm.pid" ] && kill "$(cat "$demo/swtpm/swtpm.pid")" 2>/dev/null || true
}
trap cleanup EXIT

admin=("$server")
sock=(-s "$demo/admin.sock")
for _ in $(seq 1 150); do
  if "${admin[@]}" healthcheck "${sock[@]}" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "the server exited during start-up:" >&2; tail -n 20 "$demo/server.log" >&2; exit 1
  fi
  sleep 0.2
done
"${admin[@]}" healthcheck "${sock[@]}"

echo "== the agent attests with tpm_ek (EK certificate, credential activation, quote, event log, policy)"
"${admin[@]}" bundle show "${sock[@]}" > "$demo/agent-bootstrap-bundle.pem"
"$agent" attest -c "$demo/agent.toml" | tee "$demo/agent-attest.txt"
agent_id=$(awk -F' : ' '/^Agent ID/ {print $2}' "$demo/agent-attest.txt")
policy=$(awk -F' : ' '/^Boot policy/ {print $2}' "$demo/agent-attest.txt")
parent_id="$agent_id"

echo "== registration entry"
"${admin[@]}" entry create "${sock[@]}" --spiffe-id "$spiffe_id" --parent-id "$parent_id" \
  --selector "unix:uid:$(id -u)"

echo "== minting an X.509-SVID and a JWT-SVID"
"${admin[@]}" x509 mint "${sock[@]}" --spiffe-id "$spiffe_id" --write "$demo"
"${admin[@]}" jwt mint "${sock[@]}" --spiffe-id "$spiffe_id" --audience demo --write "$demo/jwt.txt" >/dev/null
"${admin[@]}" bundle show "${sock[@]}" --format pem > "$demo/bundle.pem"
"${admin[@]}" bundle show "${sock[@]}" --format jwks > "$demo/bundle.jwks.json"

echo "== the agent serves the Workload API; a workload (uid $(id -u)) fetches its SVID"
"$agent" run -c "$demo/agent.toml" >"$demo/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 1 150); do
  if "$agent" api fetch x509 -s "$demo/agent-api.sock" --write "$demo/workload" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$agent_pid" 2>/dev/null; then
    echo "the agent exited:" >&2; tail -n 20 "$demo/agent.log" >&2; exit 1
  fi
  sleep 0.2
done
"$agent" api fetch x509 -s "$demo/agent-api.sock" --write "$demo/workload"
openssl verify -CAfile "$demo/workload/bundle.pem" "$demo/workload/svid.pem"
workload_id=$("$agent" api fetch x509 -s "$demo/agent-api.sock" --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["svids"][0]["spiffe_id"])')

echo "== checks"
openssl verify -CAfile "$demo/bundle.pem" "$demo/svid.pem"
echo "Keys in the token (the CA's two, the audit log's checkpoint key; private keys sensitive, never extractable):"
pkcs11-tool --module "$module" --token-label ironroot-demo --login --pin 123456 --list-objects --type privkey 2>/dev/null \
  | grep -E 'Private Key|label|Access' | sed 's/^/  /'
echo "Audit log ($demo/data/audit: the entry, the mints, the attestation; hash-chained, signed in the HSM):"
sleep 2
"$server" audit verify -c "$demo/server.toml" | sed 's/^/  /'

echo
echo "Files in $demo: bundle.pem svid.pem svid.key jwt.txt bundle.jwks.json softhsm/ agent/ workload/"
echo "Workload SVID (from the Workload API): $workload_id -> $demo/workload/{svid.pem,svid.key,bundle.pem}"
echo "Agent ID: $agent_id (measured-boot policy passed: $policy)"
echo "SPIFFE ID: $spiffe_id"
