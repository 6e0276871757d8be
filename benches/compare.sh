#!/usr/bin/env bash
# Compares switchboard with the tokio peer (examples/tokio_peer.rs) on the benchmark
# scenarios, in interleaved rounds (A B A B ...), and prints the medians.
#
#   benches/compare.sh                      # all scenarios, 5 rounds
#   ROUNDS=3 SCENARIOS="S2 S4" benches/compare.sh
#
# Scenarios (framed echo on loopback unless said otherwise):
#   S1 1 conn, depth 1, 64 B          S4 10 conns, depth 4, 64 KiB
#   S2 100 conns, depth 16, 64 B      S5 10,000 idle + 10 active conns (depth 16), 64 B
#   S3 1000 conns, depth 1, 512 B     S6 UDP, 1 socket, 16 in flight, 64 B
#   S7 scale: 19,500 conns at 1 msg/s each, 64 B (one round; not part of the ratios)
#
# The server runs on core 0 (taskset -c 0), the load generator on core 1. Each run is
# bounded (warm-up + duration, plus a hard timeout) and uses its own port on 127.0.0.1.
# The load generator reads the server's CPU time and memory from /proc (--server-pid),
# so "messages per server CPU-second" covers exactly the measured window.
#
# Besides the ratio, each scenario prints its ceiling: the ratio switchboard would reach
# if it spent no user-space CPU at all, with its own kernel time per message and with
# the peer's. Where both servers are kernel-bound, no user-space work can lift the ratio
# above that line.
#
# Environment: ROUNDS (5), DURATION (3 s), WARMUP (1 s), SCENARIOS ("S1 ... S7"),
# OUT (target/bench-results), BASE_PORT (a random port in 20000-25999; every run takes
# the next free one, below the ephemeral range so client sockets never collide).
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-3}
WARMUP=${WARMUP:-1}
SCENARIOS=${SCENARIOS:-"S1 S2 S3 S4 S5 S6 S7"}
OUT=${OUT:-target/bench-results}
BASE_PORT=${BASE_PORT:-$((20000 + RANDOM % 6000))}

cd "$(dirname "$0")/.."
# shellcheck source=benches/common.sh
source benches/common.sh

scenario_args() {
    case "$1" in
        S1) echo "--conns 1 --depth 1 --size 64" ;;
        S2) echo "--conns 100 --depth 16 --size 64" ;;
        S3) echo "--conns 1000 --depth 1 --size 512" ;;
        S4) echo "--conns 10 --depth 4 --size 65536" ;;
        S5) echo "--conns 10 --depth 16 --size 64 --idle 10000" ;;
        S6) echo "--mode udp --conns 1 --depth 16 --size 64" ;;
        S7) echo "--conns 19500 --depth 1 --size 64 --rate 1" ;;
        *) echo "unknown scenario $1" >&2; exit 2 ;;
    esac
}

# start_server KIND PORT: starts the server pinned to core 0, waits until it listens.
start_server() {
    local kind=$1 port=$2
    server_command "$kind" "$port"
    # (The peer announces its endpoints on stderr; switchboard only warns there.)
    if [[ "$kind" == tokio ]]; then
        taskset -c 0 "${SERVER_COMMAND[@]}" 2>/dev/null &
    else
        taskset -c 0 "${SERVER_COMMAND[@]}" &
    fi
    SERVER_PID=$!
    for _ in $(seq 100); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then break; fi
        if ! port_free "$port"; then return 0; fi
        sleep 0.05
    done
    echo "compare.sh: $kind did not start on port $port" >&2
    exit 1
}

# run_one KIND SCENARIO ROUND PORT: one bounded run; the summary goes to a JSON file.
run_one() {
    local kind=$1 scenario=$2 round=$3 port=$4
    local file="$OUT/$scenario-$kind-$round.json"
    start_server "$kind" "$port"
    # shellcheck disable=SC2046
    if ! timeout $((${DURATION%.*} + ${WARMUP%.*} + 90)) taskset -c 1 "$SB" bench \
        --addr "127.0.0.1:$port" $(scenario_args "$scenario") \
        --duration "$DURATION" --warmup "$WARMUP" --server-pid "$SERVER_PID" \
        --json --quiet >"$file"; then
        echo "compare.sh: $scenario $kind round $round reported errors (see $file)" >&2
    fi
    stop_server
    printf '%s %-11s round %s: %s\n' "$scenario" "$kind" "$round" \
        "$(jq -r '"\(.msgs_per_sec|floor) msgs/s, p99 \(.latency.p99_us) us, \(.server.msgs_per_cpu_sec|floor) msgs/CPU-s, errors \(.errors)"' "$file")"
}

build_binaries
mkdir -p "$OUT"
rm -f "$OUT"/*.json

port=$BASE_PORT
for scenario in $SCENARIOS; do
    rounds=$ROUNDS
    [[ "$scenario" == S7 ]] && rounds=1
    for round in $(seq "$rounds"); do
        for kind in switchboard tokio; do
            next_port
            run_one "$kind" "$scenario" "$round" "$port"
        done
    done
done

echo
echo "medians over rounds ($(date -u +%Y-%m-%d), $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'))"
python3 - "$OUT" $SCENARIOS <<'PY'
import json, statistics, sys, glob, os
out, scenarios = sys.argv[1], sys.argv[2:]
def load(s, kind):
    runs = []
    for f in sorted(glob.glob(os.path.join(out, f"{s}-{kind}-*.json"))):
        try:
            runs.append(json.load(open(f)))
        except ValueError:
            pass
    return runs
med = statistics.median
print(f"{'':4} {'server':<11} {'msgs/s':>10} {'p99 us':>9} {'CPU s':>6} {'user s':>6} {'msgs/CPU-s':>11} {'RSS KiB':>8} {'HWM KiB':>8} {'idle B/conn':>11} {'errors':>6}")
for s in scenarios:
    per_kind = {}
    for kind in ("switchboard", "tokio"):
        runs = [r for r in load(s, kind) if r.get("server")]
        if not runs:
            continue
        per_kind[kind] = runs
        idle = runs[0]["idle"]
        per_idle = med([(r["server"]["rss_connected_kib"] - r["server"]["rss_before_kib"]) * 1024 / idle for r in runs]) if idle else float("nan")
        print(f"{s:4} {kind:<11} {med([r['msgs_per_sec'] for r in runs]):>10.0f} "
              f"{med([r['latency']['p99_us'] for r in runs]):>9.1f} "
              f"{med([r['server']['cpu_secs'] for r in runs]):>6.2f} "
              f"{med([r['server'].get('user_cpu_secs', float('nan')) for r in runs]):>6.2f} "
              f"{med([r['server']['msgs_per_cpu_sec'] for r in runs]):>11.0f} "
              f"{med([r['server']['rss_end_kib'] for r in runs]):>8.0f} "
              f"{med([r['server']['hwm_kib'] for r in runs]):>8.0f} "
              f"{per_idle:>11.0f} {sum(r['errors'] for r in runs):>6}")
    if len(per_kind) == 2:
        pairs = list(zip(per_kind["switchboard"], per_kind["tokio"]))
        ratio = med([a["server"]["msgs_per_cpu_sec"] / b["server"]["msgs_per_cpu_sec"] for a, b in pairs])
        p99 = med([a["latency"]["p99_us"] / b["latency"]["p99_us"] for a, b in pairs])
        print(f"{s:4} ratio switchboard/tokio: msgs per CPU-s {ratio:.2f} (paired median of {len(pairs)}), p99 {p99:.2f}")
        # What the ratio would be if switchboard used no user-space CPU at all: the
        # kernel's share of the work then sets the limit. First with switchboard's own
        # kernel time per message, then with the peer's (a server making the peer's
        # system calls, at zero user-space cost).
        kernel_share = lambda r: r["server"]["cpu_secs"] / max(r["server"]["cpu_secs"] - r["server"]["user_cpu_secs"], 1e-9)
        own = med([a["server"]["msgs_per_cpu_sec"] / b["server"]["msgs_per_cpu_sec"] * kernel_share(a) for a, b in pairs])
        peers = med([kernel_share(b) for _, b in pairs])
        print(f"{s:4} ceiling at zero user-space CPU: {own:.2f} with switchboard's kernel time per message, {peers:.2f} with the peer's")
PY
