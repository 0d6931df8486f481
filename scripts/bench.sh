#!/usr/bin/env bash
# Reproducible benchmark of Stock Bazaar, using only its own load generator (bazaar client)
# and chaos experiment. Method and results: docs/PERFORMANCE.md.
#
#   scripts/bench.sh [--repeat N] [--duration 5s] [--replication primary-backup|raft] [--out DIR]
#
# Every scenario runs against a fresh system started by `bazaar up` on free ports in a
# temporary directory, N times; the table shows the median (and the range) of the N runs.
# Shared machines are noisy: compare numbers measured in one run of this script.
# Needs: cargo, python3 (standard library only, to read the JSON reports).
set -euo pipefail

repeat=3
duration=5s
replication=primary-backup
out=""
while (($#)); do
  case "$1" in
    --repeat) repeat="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --replication) replication="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$repeat" =~ ^[1-9][0-9]*$ ]] || { echo "error: --repeat $repeat must be a positive integer" >&2; exit 2; }
[[ "$replication" == primary-backup || "$replication" == raft ]] ||
  { echo "error: --replication $replication must be primary-backup or raft" >&2; exit 2; }

root="$(cd "$(dirname "$0")/.." && pwd)"
cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p bazaar
bazaar="$root/target/release/bazaar"
work="$(mktemp -d -t bazaar-bench-XXXXXX)"
out="${out:-$work/results}"
mkdir -p "$out"
up_pid=""

stop_system() {
  if [[ -n "$up_pid" ]] && kill -0 "$up_pid" 2>/dev/null; then
    kill -TERM "$up_pid"
    wait "$up_pid" 2>/dev/null || true
  fi
  up_pid=""
}
trap 'stop_system; rm -rf "$work/data"' EXIT

free_base_port() {
  # A base port with the ports `up` uses free (front-end +0, catalogs +1 and +2, replicas +11..+13).
  python3 - <<'EOF'
import socket, random
for _ in range(200):
    base = random.randrange(20000, 60000)
    socks = []
    try:
        for off in (0, 1, 2, 11, 12, 13):
            s = socket.socket(); s.bind(("127.0.0.1", base + off)); socks.append(s)
        print(base); break
    except OSError:
        pass
    finally:
        for s in socks: s.close()
EOF
}

# start_system <extra up flags...>: starts a fresh system and sets $frontend.
start_system() {
  local base
  base="$(free_base_port)"
  rm -rf "$work/data"
  "$bazaar" up --base-port "$base" --data-dir "$work/data" --log-dir "$work/logs" \
    --replication "$replication" "$@" >"$work/up.out" 2>&1 &
  up_pid=$!
  frontend="http://127.0.0.1:$base"
  for _ in $(seq 1 600); do
    if grep -q "Stock Bazaar is up" "$work/up.out"; then
      # Caching starts once the invalidation feed is up.
      for _ in $(seq 1 100); do
        curl -sf "$frontend/cache" | grep -q '"enabled":true' && break
        curl -sf "$frontend/cache" | grep -q '"capacity":0' && break
        sleep 0.05
      done
      return
    fi
    kill -0 "$up_pid" 2>/dev/null || { cat "$work/up.out" >&2; exit 1; }
    sleep 0.1
  done
  echo "error: the system did not start; see $work/up.out" >&2
  exit 1
}

# client <name> <clients> <p>: one load run, its JSON report kept as $out/<name>.json.
client() {
  "$bazaar" client --frontend "$frontend" --clients "$2" --duration "$duration" --p "$3" \
    --seed 1 --json "$out/$1.json" >/dev/null 2>&1 ||
    { echo "error: bazaar client $1 failed; see $out/$1.json" >&2; exit 1; }
}

frontend_peak_rss_kb() {
  local pid
  pid="$(python3 -c "import json,sys; print([s['pid'] for s in json.load(open(sys.argv[1]))['services'] if s['role']=='frontend'][0])" "$work/data/cluster.json")"
  awk '/VmHWM/ {print $2}' "/proc/$pid/status"
}

for i in $(seq 1 "$repeat"); do
  echo "round $i of $repeat" >&2
  start_system --cache-size 16            # every stock fits: lookups are hits
  client "cached-1-$i" 1 0
  client "cached-4-$i" 4 0
  client "cached-8-$i" 8 0
  frontend_peak_rss_kb >"$out/frontend-rss-kb-$i"
  stop_system

  start_system --no-cache
  client "uncached-1-$i" 1 0
  client "uncached-8-$i" 8 0
  stop_system

  start_system
  client "trade-1-$i" 1 1
  client "trade-16-$i" 16 1
  stop_system

  "$bazaar" chaos --rounds 1 --replication "$replication" --data-dir "$work/chaos-$i" \
    --json "$out/failover-$i.json" >/dev/null 2>&1 ||
    { echo "error: chaos (failover) failed; see $out/failover-$i.json" >&2; exit 1; }
  rm -rf "$work/chaos-$i"
done

python3 - "$out" "$repeat" "$replication" "$duration" <<'EOF'
import json, statistics, sys, os, platform
out, repeat, replication, duration = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def runs(name):
    return [json.load(open(f"{out}/{name}-{i}.json")) for i in range(1, repeat + 1)]
def cell(values, fmt="{:.0f}"):
    values = sorted(values)
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(values[0])}-{fmt.format(values[-1])})"
rows = []
def lat(name, kind, label):
    rows.append((label, "p50 latency (us)", cell([r[kind]["p50_us"] for r in runs(name)])))
def rate(name, kind, label):
    rows.append((label, "throughput (req/s)", cell([r[kind]["throughput_per_s"] for r in runs(name)])))
lat("cached-1", "lookup", "cached lookup, 1 client")
rate("cached-4", "lookup", "cached lookups, 4 clients")
rate("cached-8", "lookup", "cached lookups, 8 clients")
rss = [int(open(f"{out}/frontend-rss-kb-{i}").read()) / 1024 for i in range(1, repeat + 1)]
rows.append(("front-end peak RSS after the cached runs", "MB", cell(rss, "{:.1f}")))
lat("uncached-1", "lookup", "uncached lookup (--no-cache), 1 client")
rate("uncached-8", "lookup", "uncached lookups, 8 clients")
lat("trade-1", "trade", "trade (lookup then trade, p=1), 1 client")
rate("trade-16", "trade", "trades (p=1), 16 clients")
fo = [json.load(open(f"{out}/failover-{i}.json"))["rounds"][0]["failover_ms"] for i in range(1, repeat + 1)]
rows.append(("leader SIGKILL to next successful trade (5 clients trading)", "ms", cell(fo)))
print(f"Stock Bazaar benchmark: {replication} replication, {repeat} runs of {duration} each,"
      f" {os.cpu_count()} CPUs, {platform.platform()}")
print("median (min-max) over the runs\n")
print("| measurement | unit | result |\n|---|---|---|")
for label, unit, value in rows:
    print(f"| {label} | {unit} | {value} |")
print(f"\nraw JSON reports: {out}")
EOF
