#!/usr/bin/env bash
# `make demo`: a SoftHSM token, the server on it, a registration entry, an
# X.509-SVID and a JWT-SVID minted by the HSM-held CA. Everything lands in
# target/demo/; the server is stopped at the end.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

demo="$root/target/demo"
td="demo.ironroot.test"
spiffe_id="spiffe://$td/workload/demo"
parent_id="spiffe://$td/spire/agent/join_token/demo"
module=/usr/lib/softhsm/libsofthsm2.so

echo "== building ironroot-server"
cargo build -p ironroot-server --quiet
server="$root/target/debug/ironroot-server"

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
printf '%s\n' 123456 > "$demo/hsm.pin"
softhsm2-util --init-token --free --label ironroot-demo --so-pin 87654321 --pin 123456 >/dev/null
umask 022

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
CONF

echo "== starting the server (log: $demo/server.log)"
"$server" run -c "$demo/server.toml" >"$demo/server.log" 2>&1 &
server_pid=$!
cleanup() { kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; }
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

echo "== registration entry"
"${admin[@]}" entry create "${sock[@]}" --spiffe-id "$spiffe_id" --parent-id "$parent_id" \
  --selector "unix:uid:$(id -u)"

echo "== minting an X.509-SVID and a JWT-SVID"
"${admin[@]}" x509 mint "${sock[@]}" --spiffe-id "$spiffe_id" --write "$demo"
"${admin[@]}" jwt mint "${sock[@]}" --spiffe-id "$spiffe_id" --audience demo --write "$demo/jwt.txt" >/dev/null
"${admin[@]}" bundle show "${sock[@]}" --format pem > "$demo/bundle.pem"
"${admin[@]}" bundle show "${sock[@]}" --format jwks > "$demo/bundle.jwks.json"

echo "== checks"
openssl verify -CAfile "$demo/bundle.pem" "$demo/svid.pem"
echo "CA keys in the token (private keys sensitive, never extractable):"
pkcs11-tool --module "$module" --token-label ironroot-demo --login --pin 123456 --list-objects --type privkey 2>/dev/null \
  | grep -E 'Private Key|label|Access' | sed 's/^/  /'

echo
echo "Files in $demo: bundle.pem svid.pem svid.key jwt.txt bundle.jwks.json softhsm/"
echo "SPIFFE ID: $spiffe_id"
