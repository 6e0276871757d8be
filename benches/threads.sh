#!/usr/bin/env bash
# Scaling out on one machine: `--threads 1` against `--threads 2` for echo and chat, and
# how the two spreads share connections between two loops. docs/scaling.md and
# docs/benchmarks.md quote what it prints.
#
#   ROUNDS=3 benches/threads.sh
#
# Each run prints one line: what ran, then the load generator's figures (msgs/s or
# deliveries/s, p99, server CPU seconds, msgs per server CPU-second, server RSS).
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/common.sh
ROUNDS=${ROUNDS:-3}
cargo build --release --quiet --bin switchboard
port=9400
LOG=$(mktemp)

# start_server ARGS...: starts switchboard with ARGS on $port (after next_port) and waits
# for its loops to listen, by its log rather than by connecting (a probe connection
# would count in the spread).
start_server() {
    next_port
    "$SB" "$@" --tcp "127.0.0.1:$port" --udp off --log-level info 2>"$LOG" &
    SERVER_PID=$!
    for _ in $(seq 200); do
        if grep -q -e "loops running" -e "listening on tcp" "$LOG"; then
            if [[ "$*" != *"--threads 1"* ]] && ! grep -q "loops running" "$LOG"; then
                sleep 0.05
                continue
            fi
            return
        fi
        sleep 0.05
    done
    echo "the server did not start: $(cat "$LOG")" >&2
    exit 1
}

summary() {
    python3 -c '
import json, sys
r = json.load(sys.stdin)
s, lat = r["server"], r["latency"]
grown = s["rss_connected_kib"] - s["rss_before_kib"]
print("%-30s %12s/s  p99 %9s us  server CPU %.2f s  per CPU-s %12s  RSS +%d KiB  errors %d" % (
    sys.argv[1], format(round(r["msgs_per_sec"]), ","), format(round(lat["p99_us"]), ","),
    s["cpu_secs"], format(round(s["msgs_per_cpu_sec"]), ","), grown, r["errors"]))
' "$1"
}

# echo_rounds LABEL BENCH_FLAGS...: ROUNDS rounds of echo with one loop, then two.
echo_rounds() {
    local label=$1
    shift
    for round in $(seq "$ROUNDS"); do
        for threads in 1 2; do
            start_server echo --threads "$threads"
            "$SB" bench --addr "127.0.0.1:$port" "$@" --size 64 --duration 5 --warmup 1 \
                --server-pid "$SERVER_PID" --json --log-level warn \
                | summary "$label threads $threads (round $round)"
            cleanup
        done
    done
}

echo "== echo: 100 connections x depth 16, 64 B, 5 s (server and load generator share both cores)"
echo_rounds echo --conns 100 --depth 16
echo "== echo paced: 100 connections, 2,000 msgs/s each, 64 B, 5 s (neither side saturated)"
echo_rounds "echo paced" --conns 100 --rate 2000

echo "== spread: 4 clients over 2 loops, accepted per loop, 10 runs each"
for spread in reuseport handoff; do
    splits=()
    for _ in $(seq 10); do
        start_server echo --threads 2 --spread "$spread"
        "$SB" bench --addr "127.0.0.1:$port" --conns 4 --duration 0.3 --warmup 0 \
            --log-level warn >/dev/null
        kill -TERM "$SERVER_PID"
        wait "$SERVER_PID" || true
        SERVER_PID=""
        split=$(grep "INFO  \[switchboard::reactor\] served" "$LOG" \
            | sed -E 's/.* ([0-9]+) accepted.*/\1/' | sort -n | paste -sd/)
        splits+=("$split")
    done
    echo "$spread: ${splits[*]}"
done

# chat_rounds LABEL SERVER_FLAGS...: ROUNDS rounds of the 1,000-member room with one
# loop, then two (members dealt 500/500).
chat_rounds() {
    local label=$1
    shift
    for round in $(seq "$ROUNDS"); do
        for threads in 1 2; do
            start_server chat --threads "$threads" --spread handoff "$@"
            "$SB" bench --addr "127.0.0.1:$port" --mode chat --conns 1000 --senders 1 \
                --depth 4 --size 64 --duration 3 --server-pid "$SERVER_PID" --json \
                --log-level warn | summary "$label, $threads loop(s) (round $round)"
            cleanup
        done
    done
}

echo "== chat: a 1,000-member room, 1 sender x depth 4, 64 B, 3 s"
chat_rounds chat
echo "== chat through Redis: the same room, each loop a node of a cluster through a local redis-server"
redis_port=$((port + 100))
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
REDIS_PID=$!
trap 'cleanup; kill "$REDIS_PID" 2>/dev/null || true' EXIT
sleep 0.5
chat_rounds "chat redis (a loop is a node)" --redis "redis://127.0.0.1:$redis_port"
kill "$REDIS_PID"
rm -f "$LOG"
