#!/usr/bin/env bash
# Runs the container deployment for real: builds the static binary and the FROM-scratch image,
# starts deploy/compose.yaml, trades, kills the leading replica's container (SIGKILL), trades
# again, starts it again, and runs `bazaar verify` on the databases copied out of the volumes.
# Needs root, Debian's docker.io and docker-compose (installed when missing). Starts dockerd
# itself when none runs, and stops it (by pid) at the end. Prints what it saw.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target=${CARGO_TARGET_DIR:-$root/target}
project=bazaartest
work=$(mktemp -d /tmp/bazaar-deploy-XXXXXX)
dockerd_pid=

step() { printf '\n== %s\n' "$*"; }
compose() { docker-compose -p "$project" -f deploy/compose.yaml "$@"; }
cleanup() {
    compose down -v --remove-orphans >/dev/null 2>&1 || true
    if [ -n "$dockerd_pid" ]; then
        kill "$dockerd_pid" 2>/dev/null || true
        wait "$dockerd_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
    if [ -n "${made_key:-}" ]; then rm -f "$made_key"; fi
}
trap cleanup EXIT

if ! command -v docker >/dev/null || ! command -v docker-compose >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io docker-compose
fi

step "static binary"
# BAZAAR_BIN: a static binary built beforehand (skips the build).
bin=${BAZAAR_BIN:-}
if [ -z "$bin" ]; then
    RUSTFLAGS='-C target-feature=+crt-static' cargo build --release -p bazaar \
        --target x86_64-unknown-linux-gnu
    bin=$target/x86_64-unknown-linux-gnu/release/bazaar
fi
file "$bin" 2>/dev/null || ls -la "$bin"
mkdir -p "$work/image"
cp "$bin" "$work/image/bazaar"
# Line tables are for local debugging; the image does not need them.
strip "$work/image/bazaar" 2>/dev/null || true

if ! docker info >/dev/null 2>&1; then
    step "starting dockerd"
    dockerd >"$work/dockerd.log" 2>&1 &
    dockerd_pid=$!
    for _ in $(seq 100); do docker info >/dev/null 2>&1 && break; sleep 0.2; done
    docker info >/dev/null
fi

step "image FROM scratch"
docker build -q -f deploy/Dockerfile -t stock-bazaar "$work/image"
docker image ls stock-bazaar --format '{{.Repository}}:{{.Tag}} {{.Size}}'

step "compose up"
# The compose secret: a key made for this run when the checkout has none.
made_key=
if [ ! -f deploy/cluster.key ]; then
    (umask 077 && openssl rand -hex 32 >deploy/cluster.key)
    made_key=deploy/cluster.key
fi
compose up -d
api=http://127.0.0.1:8080
for _ in $(seq 300); do curl -sf "$api/leader" >/dev/null && break; sleep 0.2; done
curl -sf "$api/leader"; echo

trade() {
    curl -s -o "$work/reply" -w '%{http_code}' -X POST "$api/orders" \
        -H 'content-type: application/json' -d "$1"
}

step "trade"
code=$(trade '{"name":"GameStart","type":"buy","quantity":3}')
echo "POST /orders -> $code $(cat "$work/reply")"
[ "$code" = 200 ]
number=$(sed -n 's/.*"transaction_number":\([0-9]*\).*/\1/p' "$work/reply")
curl -sf "$api/orders/$number"; echo

step "kill -9 the leading replica's container"
leader=$(curl -sf "$api/leader" | sed -n 's/.*"id":\([0-9]*\).*/\1/p')
echo "leader: replica $leader"
docker kill --signal KILL "${project}_order${leader}_1" >/dev/null
compose ps

step "trade again"
for i in 1 2 3 4 5; do
    code=$(trade "{\"name\":\"FishCo\",\"type\":\"sell\",\"quantity\":$i}")
    echo "POST /orders -> $code $(cat "$work/reply")"
    [ "$code" = 200 ]
done
echo "leader now: $(curl -sf "$api/leader")"

step "start the killed replica again; it catches up"
docker start "${project}_order${leader}_1" >/dev/null
sleep 3
code=$(trade '{"name":"GameStart","type":"sell","quantity":1}')
echo "POST /orders -> $code $(cat "$work/reply")"
[ "$code" = 200 ]
sleep 2

step "stop, copy the databases out of the volumes, verify"
compose stop -t 10
mkdir -p "$work/data"
for service in catalog1 catalog2 order1 order2 order3; do
    volume=$(docker volume inspect -f '{{.Mountpoint}}' "${project}_${service}")
    case $service in
        catalog*) name="catalog-${service#catalog}" ;;
        order*) name="order-${service#order}" ;;
    esac
    for f in "$volume"/*.db*; do
        cp "$f" "$work/data/$name.db${f##*.db}"
    done
done
ls "$work/data"
"$bin" verify --data-dir "$work/data"
step "deployment test passed"
