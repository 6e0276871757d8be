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
# Shapes, MODE:CONNS:DEPTH:SIZE: by default 10 connections x depth 16 (pipelined) and
# 1 connection x depth 1 (ping-pong), 64-byte frames. SHAPES="udp:1:16:64
# framed:10:4:65536" covers S6 and S4. Output files go to OUT (target/callgrind);
# `callgrind_annotate FILE` shows where the instructions go.
set -euo pipefail

N1=${N1:-20000}
N2=${N2:-100000}
SHAPES=${SHAPES:-"framed:10:16:64 framed:1:1:64"}
KINDS=${KINDS:-"switchboard tokio"}
OUT=${OUT:-target/callgrind}

cd "$(dirname "$0")/.."
# shellcheck source=benches/common.sh
source benches/common.sh
port=$((26000 + RANDOM % 4000))

# instructions KIND MODE CONNS DEPTH SIZE MESSAGES: total Ir of one server run.
instructions() {
    local kind=$1 mode=$2 conns=$3 depth=$4 size=$5 messages=$6
    local file="$OUT/$kind-$mode-${conns}x${depth}x$size-$messages.out"
    next_port
    server_command "$kind" "$port"
    valgrind --tool=callgrind --callgrind-out-file="$file" "${SERVER_COMMAND[@]}" \
        >/dev/null 2>"$file.log" &
    SERVER_PID=$!
    for _ in $(seq 600); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        port_free "$port" || break
        sleep 0.1
    done
    timeout 300 "$SB" bench --addr "127.0.0.1:$port" --mode "$mode" --conns "$conns" \
        --depth "$depth" --size "$size" --messages "$messages" --duration 280 --warmup 0 \
        --quiet --json >"$file.json"
    kill -TERM "$SERVER_PID"
    timeout 60 tail --pid="$SERVER_PID" -f /dev/null || kill -KILL "$SERVER_PID"
    wait "$SERVER_PID" || true
    SERVER_PID=""
    # UDP may lose a datagram now and then; TCP must echo exactly the budget.
    if [[ "$(jq .errors "$file.json")" != 0 ]] ||
        [[ "$mode" != udp && "$(jq .messages "$file.json")" != "$messages" ]]; then
        echo "callgrind.sh: $kind run did not echo exactly $messages messages" >&2
        exit 1
    fi
    local echoed
    echoed=$(jq .messages "$file.json")
    echo "$(sed -n 's/^summary: *//p; s/^totals: *//p' "$file" | head -1) $echoed"
}

build_binaries
mkdir -p "$OUT"

printf '%-12s %-20s %14s %14s %12s\n' server shape "I(N1)" "I(N2)" "Ir/message"
for kind in $KINDS; do
    for shape in $SHAPES; do
        IFS=: read -r mode conns depth size <<<"$shape"
        run1=$(instructions "$kind" "$mode" "$conns" "$depth" "$size" "$N1") || exit 1
        run2=$(instructions "$kind" "$mode" "$conns" "$depth" "$size" "$N2") || exit 1
        read -r i1 n1 <<<"$run1"
        read -r i2 n2 <<<"$run2"
        per=$(((i2 - i1) / (n2 - n1)))
        printf '%-12s %-20s %14s %14s %12s\n' "$kind" "$shape" "$i1" "$i2" "$per"
    done
done
