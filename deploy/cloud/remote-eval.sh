#!/usr/bin/env bash
# From a workstation: install the server on SERVER, run the evaluation sweep from CLIENT against
# it with the cache on and then off, and copy the results back to ./remote-eval/.
#   deploy/cloud/remote-eval.sh user@SERVER user@CLIENT [SERVER_PRIVATE_IP]
set -euo pipefail
server="${1:?usage: $0 user@SERVER user@CLIENT [SERVER_PRIVATE_IP]}"
client="${2:?usage: $0 user@SERVER user@CLIENT [SERVER_PRIVATE_IP]}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
binary="$root/target/x86_64-unknown-linux-gnu/release/bazaar"
[[ -x "$binary" ]] || { echo "error: build the static binary first (deploy/cloud/README.md step 1)" >&2; exit 2; }

scp -q "$binary" "$root/deploy/cloud/install-server.sh" "$root/deploy/cloud/bazaar.service" "$server:"
ssh "$server" 'sudo ./install-server.sh'
ip="${3:-$(ssh "$server" "hostname -I | awk '{print \$1}'")}"
scp -q "$binary" "$client:"
mkdir -p remote-eval

for setting in on off; do
  flags=""; [[ $setting == off ]] && flags="--no-cache"
  ssh "$server" "echo 'BAZAAR_UP_FLAGS=$flags' | sudo tee /etc/default/bazaar >/dev/null && sudo systemctl restart bazaar"
  ssh "$server" 'for _ in $(seq 1 120); do curl -sf http://127.0.0.1:8080/leader >/dev/null && exit 0; sleep 0.5; done; exit 1'
  ssh "$client" "rm -rf eval-$setting && ./bazaar eval --frontend http://$ip:8080 --out eval-$setting"
  scp -qr "$client:eval-$setting" remote-eval/
done
ssh "$server" "echo 'BAZAAR_UP_FLAGS=' | sudo tee /etc/default/bazaar >/dev/null && sudo systemctl restart bazaar"
echo "results in ./remote-eval/eval-on and ./remote-eval/eval-off"
