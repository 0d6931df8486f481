#!/usr/bin/env bash
# Installs Stock Bazaar as a systemd service on this machine (run as root, from the directory
# holding the `bazaar` binary and bazaar.service). Idempotent: run it again to upgrade.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
[[ $EUID -eq 0 ]] || { echo "error: run as root (sudo $0)" >&2; exit 2; }
[[ -x "$here/bazaar" ]] || { echo "error: $here/bazaar not found or not executable" >&2; exit 2; }

id bazaar >/dev/null 2>&1 || useradd --system --home /var/lib/bazaar --shell /usr/sbin/nologin bazaar
install -d -o bazaar -g bazaar -m 0750 /var/lib/bazaar
install -m 0755 "$here/bazaar" /usr/local/bin/bazaar
install -m 0644 "$here/bazaar.service" /etc/systemd/system/bazaar.service
touch /etc/default/bazaar
systemctl daemon-reload
systemctl enable bazaar >/dev/null
systemctl restart bazaar

for _ in $(seq 1 120); do
  if curl -sf http://127.0.0.1:8080/leader >/dev/null 2>&1; then
    echo "Stock Bazaar is up: http://$(hostname -I | awk '{print $1}'):8080"
    exit 0
  fi
  sleep 0.5
done
echo "error: the front-end did not answer within 60 s; see journalctl -u bazaar" >&2
exit 1
