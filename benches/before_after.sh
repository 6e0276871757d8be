#!/usr/bin/env bash
# Plain echo, two builds of the server paired: BEFORE and AFTER are two `switchboard`
# binaries (say one built from an older commit in a git worktree), served in alternating
# rounds on core 0 and driven by the same load generator on core 1. Prints, per round,
# server and shape: msgs/s, msgs per server CPU-second, server user CPU seconds.
#
#   git worktree add /tmp/before d9ce7d2 && (cd /tmp/before && cargo build --release)
#   BEFORE=/tmp/before/target/release/switchboard benches/before_after.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE=${BEFORE:?the older switchboard binary}
AFTER=${AFTER:-target/release/switchboard}
ROUNDS=${ROUNDS:-3}
SHAPES=${SHAPES:-"100:16:64 1:1:64"}
port=$((27000 + RANDOM % 2000))
echo "round server conns:depth:size msgs/s msgs/server-CPU-s server-user-CPU-s"
for round in $(seq "$ROUNDS"); do
    for kind in before after; do
        binary=$BEFORE
        [[ $kind == after ]] && binary=$AFTER
        port=$((port + 1))
        taskset -c 0 "$binary" echo --tcp "127.0.0.1:$port" --udp off --log-level warn &
        pid=$!
        for _ in $(seq 50); do
            (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
            sleep 0.1
        done
        for shape in $SHAPES; do
            IFS=: read -r conns depth size <<<"$shape"
            json=$(taskset -c 1 "$AFTER" bench --addr "127.0.0.1:$port" --conns "$conns" \
                --depth "$depth" --size "$size" --duration 3 --warmup 1 --quiet --json \
                --server-pid "$pid")
            echo "$round $kind $shape $(jq -r '[.msgs_per_sec, .server.msgs_per_cpu_sec,
                .server.user_cpu_secs] | map(. * 100 | round / 100) | @tsv' <<<"$json")"
        done
        kill -TERM "$pid"
        wait "$pid" || true
    done
done
