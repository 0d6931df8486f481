#!/usr/bin/env bash
# Stock Bazaar beside reference servers, measured in one run on this machine (docs/PERFORMANCE.md):
#
#   trades   wrk POST /orders (sell 1 share) against `bazaar up`, primary-backup and raft,
#            beside wrk PUT against a 3-member etcd on loopback (WAL fsync per commit, its JSON
#            gateway), at 1 and 16 connections;
#   lookups  wrk GET /stocks/FishCo (a cache hit) beside nginx serving the same JSON body as a
#            static file, at 5 connections;
#   cost     CPU seconds per trade across every process of each system (from /proc), and
#            fsync/fdatasync calls per trade on each process (strace -c, in a separate run,
#            since tracing slows everything it watches).
#
#   scripts/compare.sh [--duration 4s] [--out DIR]
#
# Needs: wrk, etcd (Debian's etcd-server), nginx (nginx-light), strace, python3, curl.
# Everything listens on 127.0.0.1 on free ports and is stopped when the script ends.
set -euo pipefail

duration=4s
out=""
while (($#)); do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$duration" =~ ^[1-9][0-9]*s$ ]] || { echo "error: --duration $duration must be whole seconds, e.g. 4s" >&2; exit 2; }
for tool in wrk etcd nginx strace python3 curl; do
  command -v "$tool" >/dev/null || [[ -x "/usr/sbin/$tool" ]] || [[ -x "/usr/bin/$tool" ]] ||
    { echo "error: $tool is missing (apt-get install wrk etcd-server nginx-light strace)" >&2; exit 2; }
done
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"

root="$(cd "$(dirname "$0")/.." && pwd)"
cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p bazaar
bazaar="$root/target/release/bazaar"
work="$(mktemp -d -t bazaar-compare-XXXXXX)"
out="${out:-$work/results}"
mkdir -p "$out"
pids=()

stop_all() {
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  pids=()
}
trap 'stop_all; rm -rf "$work/etcd" "$work/data"' EXIT

free_ports() { # free_ports N: N distinct free ports on loopback
  python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks: s.close()
EOF
}

wait_http() { # wait_http URL [curl args...]: until it answers 2xx, at most 60 s
  local url="$1"; shift
  for _ in $(seq 1 600); do
    curl -sf -o /dev/null "$@" "$url" && return 0
    sleep 0.1
  done
  echo "error: $url did not answer" >&2; exit 1
}

post_lua() { # post_lua FILE PATH BODY: a wrk script that POSTs BODY as JSON
  cat >"$1" <<EOF
wrk.method = "POST"
wrk.path = "$2"
wrk.body = '$3'
wrk.headers["Content-Type"] = "application/json"
EOF
}

# run_wrk NAME CONNECTIONS URL [LUA]: wrk's report kept as $out/NAME.txt
run_wrk() {
  local threads=$(( $2 < 2 ? 1 : 2 ))
  local script=()
  [[ -n "${4:-}" ]] && script=(-s "$4")
  wrk -t "$threads" -c "$2" -d "$duration" --latency "${script[@]}" "$3" >"$out/$1.txt"
}

cpu_ticks() { # cpu_ticks PID...: utime + stime of these processes, in clock ticks
  local total=0 pid
  for pid in "$@"; do
    if [[ -r "/proc/$pid/stat" ]]; then
      total=$(( total + $(awk '{print $14 + $15}' "/proc/$pid/stat") ))
    fi
  done
  echo "$total"
}

# measure_cpu NAME CONNECTIONS URL LUA PID...: a wrk run, and the CPU its processes spent
measure_cpu() {
  local name="$1" conns="$2" url="$3" lua="$4"; shift 4
  local before after
  before="$(cpu_ticks "$@")"
  run_wrk "$name" "$conns" "$url" "$lua"
  after="$(cpu_ticks "$@")"
  echo $(( after - before )) >"$out/$name.cpu-ticks"
}

# fsyncs NAME LUA URL LABEL=PID...: fsync and fdatasync calls of each process during a
# 1-connection run, kept as $out/NAME.fsync ("label calls") with the trades in $out/NAME.txt
fsyncs() {
  local name="$1" lua="$2" url="$3"; shift 3
  local tracers=() label pid
  for pair in "$@"; do
    label="${pair%%=*}"; pid="${pair#*=}"
    strace -f -c -q -e trace=fsync,fdatasync -o "$work/$name.$label.strace" -p "$pid" &
    tracers+=($!)
  done
  sleep 1
  run_wrk "$name" 1 "$url" "$lua"
  for t in "${tracers[@]}"; do kill -INT "$t" 2>/dev/null || true; done
  for t in "${tracers[@]}"; do wait "$t" 2>/dev/null || true; done
  : >"$out/$name.fsync"
  for pair in "$@"; do
    label="${pair%%=*}"
    echo "$label $(awk '$NF=="fsync" || $NF=="fdatasync" {n+=$4} END {print n+0}' "$work/$name.$label.strace")" \
      >>"$out/$name.fsync"
  done
}

echo "etcd: 3 members" >&2
read -r c1 c2 c3 p1 p2 p3 <<<"$(free_ports 6)"
cluster="m1=http://127.0.0.1:$p1,m2=http://127.0.0.1:$p2,m3=http://127.0.0.1:$p3"
mkdir -p "$work/etcd"
for i in 1 2 3; do
  c="c$i"; p="p$i"
  etcd --name "m$i" --data-dir "$work/etcd/m$i" \
    --listen-client-urls "http://127.0.0.1:${!c}" --advertise-client-urls "http://127.0.0.1:${!c}" \
    --listen-peer-urls "http://127.0.0.1:${!p}" --initial-advertise-peer-urls "http://127.0.0.1:${!p}" \
    --initial-cluster "$cluster" --initial-cluster-state new --log-level error \
    >"$work/etcd-m$i.log" 2>&1 &
  pids+=($!)
done
etcd_pids=("${pids[@]}")
post_lua "$work/etcd.lua" /v3/kv/put '{"key":"YmF6YWFy","value":"MQ=="}'
for _ in $(seq 1 600); do
  curl -sf -X POST -d '{"key":"YmF6YWFy","value":"MA=="}' "http://127.0.0.1:$c1/v3/kv/put" >/dev/null && break
  sleep 0.1
done
run_wrk etcd-put-1 1 "http://127.0.0.1:$c1" "$work/etcd.lua"
measure_cpu etcd-put-16 16 "http://127.0.0.1:$c1" "$work/etcd.lua" "${etcd_pids[@]}"
fsyncs etcd-fsync "$work/etcd.lua" "http://127.0.0.1:$c1" "m1=${etcd_pids[0]}" "m2=${etcd_pids[1]}" "m3=${etcd_pids[2]}"
stop_all

post_lua "$work/trade.lua" /orders '{"name":"FishCo","type":"sell","quantity":1}'
for mode in primary-backup raft; do
  echo "bazaar: $mode" >&2
  rm -rf "$work/data"
  "$bazaar" up --base-port 0 --data-dir "$work/data" --log-dir "$work/logs-$mode" \
    --replication "$mode" >"$work/up-$mode.out" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 600); do
    grep -q "Stock Bazaar is up" "$work/up-$mode.out" && break
    sleep 0.1
  done
  frontend="$(python3 -c "import json,sys; print([s['url'] for s in json.load(open(sys.argv[1]))['services'] if s['role']=='frontend'][0])" "$work/data/cluster.json")"
  wait_http "$frontend/stocks/FishCo"
  mapfile -t labelled < <(python3 - "$work/data/cluster.json" <<'EOF'
import json, sys
for s in json.load(open(sys.argv[1]))["services"]:
    name = s["role"] + (f"-{s['id']}" if s.get("id") is not None else "")
    print(f"{name}={s['pid']}")
EOF
)
  service_pids=("${labelled[@]#*=}")
  run_wrk "$mode-trade-1" 1 "$frontend" "$work/trade.lua"
  measure_cpu "$mode-trade-16" 16 "$frontend" "$work/trade.lua" "${service_pids[@]}"
  fsyncs "$mode-fsync" "$work/trade.lua" "$frontend" "${labelled[@]}"
  if [[ "$mode" == primary-backup ]]; then
    echo "lookups: ours beside nginx" >&2
    curl -sf "$frontend/stocks/FishCo" >/dev/null
    curl -sf "$frontend/stocks/FishCo" >"$work/FishCo.json"
    run_wrk cached-lookup-5 5 "$frontend/stocks/FishCo"
    read -r nginx_port <<<"$(free_ports 1)"
    mkdir -p "$work/nginx/www/stocks"
    cp "$work/FishCo.json" "$work/nginx/www/stocks/FishCo"
    # nginx started as root serves as an unprivileged worker: let it through the private
    # temporary directory to the file (and nothing else).
    chmod a+x "$work" "$work/nginx"
    chmod -R a+rX "$work/nginx/www"
    cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  default_type application/json;
  client_body_temp_path $work/nginx/tmp;
  proxy_temp_path $work/nginx/tmp;
  fastcgi_temp_path $work/nginx/tmp;
  uwsgi_temp_path $work/nginx/tmp;
  scgi_temp_path $work/nginx/tmp;
  server { listen 127.0.0.1:$nginx_port; root $work/nginx/www; }
}
EOF
    mkdir -p "$work/nginx/tmp"
    "$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf" &
    nginx_pid=$!
    wait_http "http://127.0.0.1:$nginx_port/stocks/FishCo"
    run_wrk nginx-static-5 5 "http://127.0.0.1:$nginx_port/stocks/FishCo"
    kill -TERM "$nginx_pid"; wait "$nginx_pid" 2>/dev/null || true
    wc -c <"$work/FishCo.json" | tr -d ' ' >"$out/body-bytes"
  fi
  stop_all
done

python3 - "$out" "$duration" <<'EOF'
import os, platform, re, sys
out, duration = sys.argv[1], sys.argv[2]
tick = os.sysconf("SC_CLK_TCK")

def wrk(name):
    text = open(f"{out}/{name}.txt").read()
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    total = int(re.search(r"(\d+) requests in", text).group(1))
    m = re.search(r"50%\s+([\d.]+)(us|ms|s)\b", text)
    p50_ms = float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return rate, p50_ms, total, int(bad.group(1)) if bad else 0

def cpu_per_op_us(name):
    ticks = int(open(f"{out}/{name}.cpu-ticks").read())
    return ticks / tick / wrk(name)[2] * 1e6

def fsync_per_op(name):
    total = wrk(name)[2]
    rows = [line.split() for line in open(f"{out}/{name}.fsync")]
    return ", ".join(f"{label} {int(n) / total:.2f}" for label, n in rows)

print(f"Stock Bazaar beside etcd and nginx: one run, {duration} per measurement, "
      f"{os.cpu_count()} CPUs, {platform.platform()}\n")
print("| trades | etcd put | ours, primary-backup | ours, raft |")
print("|---|---|---|---|")
e1, p1, r1 = wrk("etcd-put-1"), wrk("primary-backup-trade-1"), wrk("raft-trade-1")
e16, p16, r16 = wrk("etcd-put-16"), wrk("primary-backup-trade-16"), wrk("raft-trade-16")
print(f"| 1 connection, /s | {e1[0]:,.0f} | {p1[0]:,.0f} ({p1[0]/e1[0]:.2f}x) | {r1[0]:,.0f} ({r1[0]/e1[0]:.2f}x) |")
print(f"| 1 connection, p50 | {e1[1]:.2f} ms | {p1[1]:.2f} ms ({p1[1]/e1[1]:.2f}x) | {r1[1]:.2f} ms ({r1[1]/e1[1]:.2f}x) |")
print(f"| 16 connections, /s | {e16[0]:,.0f} | {p16[0]:,.0f} ({p16[0]/e16[0]:.2f}x) | {r16[0]:,.0f} ({r16[0]/e16[0]:.2f}x) |")
print(f"| 16 connections, p50 | {e16[1]:.2f} ms | {p16[1]:.2f} ms | {r16[1]:.2f} ms |")
print(f"| CPU per write, all processes (16 conn.) | {cpu_per_op_us('etcd-put-16'):.0f} us | "
      f"{cpu_per_op_us('primary-backup-trade-16'):.0f} us | {cpu_per_op_us('raft-trade-16'):.0f} us |")
print(f"| fsync+fdatasync per write, by process (1 conn.) | {fsync_per_op('etcd-fsync')} | "
      f"{fsync_per_op('primary-backup-fsync')} | {fsync_per_op('raft-fsync')} |")
errors = {n: wrk(n)[3] for n in ["etcd-put-1", "etcd-put-16", "primary-backup-trade-1",
          "primary-backup-trade-16", "raft-trade-1", "raft-trade-16"]}
bad = {n: e for n, e in errors.items() if e}
print(f"\nnon-2xx replies: {bad if bad else 'none'}\n")
body = open(f"{out}/body-bytes").read().strip()
ng, ours = wrk("nginx-static-5"), wrk("cached-lookup-5")
print(f"| lookups, 5 connections, the same {body}-byte JSON body | /s | p50 |")
print("|---|---|---|")
print(f"| nginx, static file | {ng[0]:,.0f} | {ng[1]*1000:.0f} us |")
print(f"| ours, cached GET /stocks/FishCo | {ours[0]:,.0f} ({ours[0]/ng[0]:.2f}x) | {ours[1]*1000:.0f} us |")
print(f"\nraw wrk reports and counts: {out}")
EOF
