#!/usr/bin/env bash
# The load generator against its earlier self: the same server, the same shapes, the
# generator of today (built on the library's reactor) and the one of OLD_REV (its own
# hand-written mio loop), in alternating rounds. Both drive one switchboard server of
# today; the figure is what each generator gets out of it: messages per second and
# latency, with 2 cores shared by server and generator.
#
#   benches/loadgen_compare.sh                       # OLD_REV=d61c18f, 3 rounds
#   ROUNDS=5 DURATION=5 OLD_REV=<rev> benches/loadgen_compare.sh
#
# The old generator is built from OLD_REV in a git worktree under target/ (not kept in
# the repository).
set -euo pipefail

OLD_REV=${OLD_REV:-d61c18f}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-3}
SHAPES=${SHAPES:-"framed:1:1 framed:10:16 framed:100:1 udp:4:16 chat:100:1"}

cd "$(dirname "$0")/.."
# shellcheck source=benches/common.sh
source benches/common.sh
port=$((27000 + RANDOM % 3000))

OLD_TREE=target/loadgen-old-tree
OLD=target/loadgen-old/release/switchboard
if [[ ! -x "$OLD" ]]; then
    echo "building the generator of $OLD_REV..."
    git worktree remove --force "$OLD_TREE" 2>/dev/null || true
    git worktree add --detach "$OLD_TREE" "$OLD_REV" >/dev/null
    (cd "$OLD_TREE" && CARGO_TARGET_DIR=../loadgen-old cargo build --release --quiet --bin switchboard)
fi
cargo build --release --quiet --bin switchboard

# run GENERATOR MODE CONNS DEPTH: one run's "msgs/s p50 p99" (JSON summary fields).
run() {
    local generator=$1 mode=$2 conns=$3 depth=$4 extra=()
    [[ $mode == chat ]] && extra=(--senders 1)
    "$generator" bench --addr "127.0.0.1:$port" --mode "$mode" --conns "$conns" \
        --depth "$depth" --duration "$DURATION" --warmup 1 --quiet --json "${extra[@]}" |
        jq -r '"\(.msgs_per_sec|floor) \(.latency.p50_us) \(.latency.p99_us) \(.errors)"'
}

printf '%-16s %-5s %12s %10s %10s %7s\n' shape gen msgs/s p50_us p99_us errors
for shape in $SHAPES; do
    IFS=: read -r mode conns depth <<<"$shape"
    next_port
    kind=echo
    [[ $mode == chat ]] && kind=chat
    "$SB" "$kind" --tcp "127.0.0.1:$port" --udp "127.0.0.1:$port" --log-level warn &
    SERVER_PID=$!
    wait_listening "$port"
    for round in $(seq "$ROUNDS"); do
        for gen in new old; do
            binary=$SB
            [[ $gen == old ]] && binary=$OLD
            read -r rate p50 p99 errors <<<"$(run "$binary" "$mode" "$conns" "$depth")"
            printf '%-16s %-5s %12s %10s %10s %7s\n' "$shape" "$gen" "$rate" "$p50" "$p99" "$errors"
        done
    done
    cleanup
done
