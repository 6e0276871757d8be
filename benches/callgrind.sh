#!/usr/bin/env bash
# User-space instructions per echoed message, counted exactly with valgrind's callgrind,
# for switchboard and the tokio peer (examples/tokio_peer.rs).
#
#   benches/callgrind.sh
#   N1=20000 N2=100000 benches/callgrind.sh
#
# Method: run the server under `valgrind --tool=callgrind` twice; the load generator
# (not under valgrind) has it echo N1 messages the first time and N2 the second
# (`switchboard bench --messages N`), then SIGTERM stops the server cleanly and
# callgrind writes its totals. Start-up, connection set-up and shutdown cost the same
# in both runs, so (I2 - I1) / (N2 - N1) is the cost of one echoed message.
#
# Shapes: 10 connections x depth 16 (pipelined), and 1 connection x depth 1 (ping-pong).
# Output files go to OUT (target/callgrind); `callgrind_annotate FILE` shows where the
# instructions go.
set -euo pipefail

N1=${N1:-20000}
N2=${N2:-100000}
OUT=${OUT:-target/callgrind}

cd "$(dirname "$0")/.."
SB=target/release/switchboard
PEER=target/release/examples/tokio_peer
SERVER_PID=""

cleanup() {
    if [[ -n "$SERVER_PID" ]]; then
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

port=$((26000 + RANDOM % 4000))
next_port() {
    port=$((port + 1))
    while ! port_free "$port"; do port=$((port + 1)); done
}

# instructions KIND CONNS DEPTH MESSAGES: total Ir of one server run.
instructions() {
    local kind=$1 conns=$2 depth=$3 messages=$4
    local file="$OUT/$kind-${conns}x${depth}-$messages.out"
    next_port
    local server=("$SB" echo --tcp "127.0.0.1:$port" --udp off --log-level warn)
    [[ "$kind" == tokio ]] && server=("$PEER" --tcp "127.0.0.1:$port")
    valgrind --tool=callgrind --callgrind-out-file="$file" "${server[@]}" \
        >/dev/null 2>"$file.log" &
    SERVER_PID=$!
    for _ in $(seq 600); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        port_free "$port" || break
        sleep 0.1
    done
    timeout 300 "$SB" bench --addr "127.0.0.1:$port" --conns "$conns" --depth "$depth" \
        --messages "$messages" --duration 280 --warmup 0 --quiet --json >"$file.json"
    kill -TERM "$SERVER_PID"
    timeout 60 tail --pid="$SERVER_PID" -f /dev/null || kill -KILL "$SERVER_PID"
    wait "$SERVER_PID" || true
    SERVER_PID=""
    if [[ "$(jq .errors "$file.json")" != 0 || "$(jq .messages "$file.json")" != "$messages" ]]; then
        echo "callgrind.sh: $kind run did not echo exactly $messages messages" >&2
        exit 1
    fi
    sed -n 's/^summary: *//p; s/^totals: *//p' "$file" | head -1
}

echo "building release binaries..."
cargo build --release --quiet --bin switchboard
cargo build --release --quiet --features tokio-peer --example tokio_peer
mkdir -p "$OUT"

printf '%-12s %-12s %14s %14s %12s\n' server shape "I($N1)" "I($N2)" "Ir/message"
for kind in switchboard tokio; do
    for shape in "10 16" "1 1"; do
        read -r conns depth <<<"$shape"
        i1=$(instructions "$kind" "$conns" "$depth" "$N1")
        i2=$(instructions "$kind" "$conns" "$depth" "$N2")
        per=$(( (i2 - i1) / (N2 - N1) ))
        printf '%-12s %-12s %14s %14s %12s\n' "$kind" "${conns}x${depth}" "$i1" "$i2" "$per"
    done
done
