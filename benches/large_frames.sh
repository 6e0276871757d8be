#!/usr/bin/env bash
# Large frames against a C reference: messages per server CPU-second for switchboard
# and for benches/c_echo.c (a hand-written C epoll echo server that reads a partial
# frame straight into a buffer of the frame's full length), 10 connections x depth 4 x
# 64 KiB frames, in alternating rounds. Prints each round and the ratio of medians
# (switchboard / C).
#
#   benches/large_frames.sh
#   ROUNDS=7 DURATION=5 SHAPE="--conns 10 --depth 4 --size 65536" benches/large_frames.sh
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-3}
SHAPE=${SHAPE:-"--conns 10 --depth 4 --size 65536"}

cd "$(dirname "$0")/.."
# shellcheck source=benches/common.sh
source benches/common.sh
port=$((24000 + RANDOM % 2000))
C_ECHO=target/c_echo

cargo build --release --quiet --bin switchboard
gcc -O2 -Wall -o "$C_ECHO" benches/c_echo.c

# round KIND: one run's messages per server CPU-second.
round() {
    next_port
    case "$1" in
        switchboard) "$SB" echo --tcp "127.0.0.1:$port" --udp off --log-level warn & ;;
        c) "$C_ECHO" "$port" & ;;
    esac
    SERVER_PID=$!
    wait_listening "$port"
    # shellcheck disable=SC2086
    "$SB" bench --addr "127.0.0.1:$port" $SHAPE --duration "$DURATION" --warmup 1 \
        --server-pid "$SERVER_PID" --quiet --json | jq -r '.server.msgs_per_cpu_sec | floor'
    cleanup
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }

sb_runs=() c_runs=()
printf '%-6s %16s %16s\n' round switchboard c_echo
for r in $(seq "$ROUNDS"); do
    sb=$(round switchboard)
    c=$(round c)
    sb_runs+=("$sb") c_runs+=("$c")
    printf '%-6s %16s %16s\n' "$r" "$sb" "$c"
done
sb_median=$(printf '%s\n' "${sb_runs[@]}" | median)
c_median=$(printf '%s\n' "${c_runs[@]}" | median)
echo "medians: switchboard $sb_median, c_echo $c_median msgs per server CPU-second;" \
    "ratio $(echo "scale=3; $sb_median / $c_median" | bc)"
