#!/usr/bin/env bash
# One large room across several chat nodes on this machine: a real redis-server, NODES
# `switchboard chat --redis` nodes sharing one port (--reuse-port, each its own process
# under its own open-file limit), and one `switchboard bench --procs` building a room
# of MEMBERS members, then SENDERS senders saying RATE messages a second each for
# SECONDS. docs/scaling.md and docs/benchmarks.md quote what it prints.
#
#   MEMBERS=100000 NODES=6 benches/big_room.sh
#
# Ports are outside the ephemeral range (32768-60999), so no TIME_WAIT socket of an
# earlier run ever holds them; client sockets are spread over 127.0.0.1..SRC_IPS.
# Prints: the bench's JSON summary, then what each node and Redis hold, the kernel's
# socket memory, and Redis's commands per second with the room at rest.
set -euo pipefail
cd "$(dirname "$0")/.."
MEMBERS=${MEMBERS:-100000}
NODES=${NODES:-6}
PROCS=${PROCS:-6}
SENDERS=${SENDERS:-2}
RATE=${RATE:-1}
SECONDS_OF_LOAD=${SECONDS_OF_LOAD:-30}
SRC_IPS=${SRC_IPS:-5}
PRESENCE=${PRESENCE:-1000}
CHAT_PORT=${CHAT_PORT:-19500}
REDIS_PORT=${REDIS_PORT:-16390}
ADMIN_PORT=${ADMIN_PORT:-19600}
SB=target/release/switchboard
cargo build --release --quiet --bin switchboard
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    sleep 1
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
redis() { redis-cli -p "$REDIS_PORT" "$@"; }
sock_mem() { # kernel pages held by TCP sockets, and the slab in use
    awk '/^TCP:/ {for (i = 1; i < NF; i++) if ($i == "mem") print "tcp_mem_pages", $(i + 1)}' /proc/net/sockstat
    awk '/^(Slab|SUnreclaim):/ {print $1, $2, $3}' /proc/meminfo
}

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --maxclients 1000 --daemonize no >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
REDIS_PID=$!
for _ in $(seq 100); do redis ping >/dev/null 2>&1 && break; sleep 0.1; done

echo "before: $(sock_mem | tr '\n' ' ')"
NODE_PIDS=()
for n in $(seq "$NODES"); do
    "$SB" chat --tcp "127.0.0.1:$CHAT_PORT" --udp off --reuse-port \
        --admin "127.0.0.1:$((ADMIN_PORT + n))" \
        --redis "redis://127.0.0.1:$REDIS_PORT" --presence-limit "$PRESENCE" \
        --log-level info 2>"$WORK/node$n.log" &
    PIDS+=($!)
    NODE_PIDS+=($!)
done
sleep 1
declare -A BASE_RSS
for pid in "${NODE_PIDS[@]}"; do BASE_RSS[$pid]=$(rss_kib "$pid"); done
REDIS_BASE=$(redis info memory | awk -F: '/^used_memory:/ {print $2}' | tr -d '\r')

# metric NAME: its value summed over the nodes' /metrics.
metric() {
    local sum=0 n value
    for n in $(seq "$NODES"); do
        value=$(curl -s "http://127.0.0.1:$((ADMIN_PORT + n))/metrics" |
            awk -v name="$1" '$1 == name {print $2}')
        sum=$(echo "$sum + ${value:-0}" | bc)
    done
    echo "$sum"
}
# (0 for a process gone meanwhile: a bench worker that failed, say.)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
sys_ticks() { awk '{print $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
"$SB" bench --addr "127.0.0.1:$CHAT_PORT" --mode chat --room big --procs "$PROCS" \
    --conns "$MEMBERS" --senders "$SENDERS" --rate "$RATE" --warmup 0 \
    --duration "$SECONDS_OF_LOAD" --src-ips "$SRC_IPS" --connect-timeout 30 \
    --json --log-level warn >"$WORK/bench.json" 2>"$WORK/bench.log" &
BENCH_PID=$!
PIDS+=($BENCH_PID)

# Once the bench measures, every member of every worker has joined (the workers wait
# for each other) and the messages flow: the nodes' and Redis's memory then, and
# Redis's commands per second over 10 s.
START=$(date +%s.%N)
until grep -q " measure " "$WORK/bench.log"; do
    if ! kill -0 "$BENCH_PID" 2>/dev/null; then
        echo "the bench ended before it measured:" >&2
        tail -5 "$WORK/bench.log" >&2
        exit 1
    fi
    sleep 0.5
done
echo "measuring $(echo "$(date +%s.%N) - $START" | bc) s after the bench started"
sleep 5
BENCH_PIDS=("$BENCH_PID" $(pgrep -P "$BENCH_PID" || true))
BENCH0=0
for pid in "${BENCH_PIDS[@]}"; do BENCH0=$((BENCH0 + $(cpu_ticks "$pid"))); done
declare -A CPU0 SYS0 W0
for pid in "${NODE_PIDS[@]}"; do
    CPU0[$pid]=$(cpu_ticks "$pid")
    SYS0[$pid]=$(sys_ticks "$pid")
    W0[$pid]=$(awk '/^syscw:/ {print $2}' "/proc/$pid/io")
done
declare -A FULL_RSS
for pid in "${NODE_PIDS[@]}"; do FULL_RSS[$pid]=$(rss_kib "$pid"); done
REDIS_FULL=$(redis info memory | awk -F: '/^used_memory:/ {print $2}' | tr -d '\r')
SOCK_FULL=$(sock_mem | tr '\n' ' ')
f0=$(metric switchboard_frames_out_total)
d0=$(metric switchboard_chat_deliveries_out_total)
c0=$(redis info stats | awk -F: '/^total_commands_processed:/ {print $2}' | tr -d '\r')
sleep 10
c1=$(redis info stats | awk -F: '/^total_commands_processed:/ {print $2}' | tr -d '\r')
f1=$(metric switchboard_frames_out_total)
d1=$(metric switchboard_chat_deliveries_out_total)
echo "with the room full, over 10 s: frames out $(echo "$f1 - $f0" | bc), deliveries $(echo "$d1 - $d0" | bc)"
cpu=0 sys=0 writes=0
for pid in "${NODE_PIDS[@]}"; do
    cpu=$((cpu + $(cpu_ticks "$pid") - CPU0[$pid]))
    sys=$((sys + $(sys_ticks "$pid") - SYS0[$pid]))
    writes=$((writes + $(awk '/^syscw:/ {print $2}' "/proc/$pid/io") - W0[$pid]))
done
BENCH1=0
for pid in "${BENCH_PIDS[@]}"; do BENCH1=$((BENCH1 + $(cpu_ticks "$pid"))); done
bench_cpu="$((BENCH1 - BENCH0)) ticks"
((BENCH1 >= BENCH0)) || bench_cpu="unknown (one of its processes ended meanwhile)"
echo "nodes' CPU from before the first scrape to after the last: $cpu ticks (100 a second), all nodes together, $sys of them in the kernel; write system calls $writes; the bench's processes meanwhile: $bench_cpu"
wait "$BENCH_PID" || echo "the bench exited with $?"
# The nodes' own summaries: frames out against deliveries (presence, welcomes and the
# rest are frames that are not deliveries).
for pid in "${NODE_PIDS[@]}"; do kill -TERM "$pid"; done
for pid in "${NODE_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
frames=$(grep -h -o "frames in/out [0-9]*/[0-9]*" "$WORK"/node*.log | awk -F/ '{s += $NF} END {print s}')
deliveries=$(grep -h -o "deliveries out [0-9]*" "$WORK"/node*.log | awk '{s += $3} END {print s}')
echo "nodes, the whole run (joins, the end's byes, welcomes included): frames out $frames, deliveries $deliveries"

cat "$WORK/bench.json"
echo
echo "with the room full: $SOCK_FULL"
echo "redis commands/s with the room full: $(((c1 - c0) / 10))"
echo "redis used_memory: $REDIS_BASE -> $REDIS_FULL bytes ($(((REDIS_FULL - REDIS_BASE) / MEMBERS)) B per member)"
total=0
for pid in "${NODE_PIDS[@]}"; do
    grown=$((FULL_RSS[$pid] - BASE_RSS[$pid]))
    total=$((total + grown))
    echo "node $pid: rss ${BASE_RSS[$pid]} -> ${FULL_RSS[$pid]} KiB"
done
echo "nodes: $((total * 1024 / MEMBERS)) B of RSS per member above their base"
grep -h -e WARN -e ERROR "$WORK"/node*.log | sort | uniq -c | sort -rn | head -5 || true
