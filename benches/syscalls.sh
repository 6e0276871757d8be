#!/usr/bin/env bash
# System calls and CPU time per echoed message, for switchboard and the tokio peer
# (examples/tokio_peer.rs): where the kernel-bound scenarios spend their time.
#
#   benches/syscalls.sh
#   SHAPES="framed:10:4:65536:200000" benches/syscalls.sh
#
# Method: the server runs under `perf stat` (the kernel's syscall tracepoints, context
# switches and task-clock), pinned to core 0; the load generator, on core 1, has it echo
# MESSAGES messages (`switchboard bench --messages N`), then SIGTERM stops it and perf
# prints its counts. Each count divided by MESSAGES is per message; start-up and
# connection set-up are a few hundred calls against millions.
#
# Shapes, MODE:CONNS:DEPTH:SIZE:MESSAGES: by default S2, S4 and S6 of compare.sh.
# Needs perf with access to tracepoints (root, or kernel.perf_event_paranoid <= -1).
set -euo pipefail

SHAPES=${SHAPES:-"framed:100:16:64:4000000 framed:10:4:65536:150000 udp:1:16:64:600000"}
KINDS=${KINDS:-"switchboard tokio"}
OUT=${OUT:-target/syscalls}

cd "$(dirname "$0")/.."
# shellcheck source=benches/common.sh
source benches/common.sh
port=$((26000 + RANDOM % 4000))

if ! perf stat -e 'syscalls:sys_enter_read' -x, true >/dev/null 2>&1; then
    echo "syscalls.sh: perf cannot read the syscall tracepoints here" \
        "(run as root, or set kernel.perf_event_paranoid to -1)" >&2
    exit 2
fi

# The calls an echo server of either kind makes per message.
CALLS="read write readv writev recvfrom sendto recvmsg sendmsg epoll_wait epoll_pwait"
EVENTS=$(printf 'syscalls:sys_enter_%s,' $CALLS)context-switches,task-clock

# count KIND MODE CONNS DEPTH SIZE MESSAGES: one line, the per-message figures.
count() {
    local kind=$1 mode=$2 conns=$3 depth=$4 size=$5 messages=$6
    local file="$OUT/$kind-$mode-${conns}x${depth}x$size"
    next_port
    server_command "$kind" "$port"
    # perf stat starts the server itself, so the counts cover exactly its lifetime.
    taskset -c 0 perf stat -x, -e "$EVENTS" -o "$file.perf" "${SERVER_COMMAND[@]}" \
        >/dev/null 2>"$file.log" &
    SERVER_PID=$!
    local pid=""
    for _ in $(seq 100); do
        pid=$(pgrep -P "$SERVER_PID" | head -1 || true)
        [[ -n "$pid" ]] && ! port_free "$port" && break
        sleep 0.05
    done
    if [[ -z "$pid" ]]; then
        echo "syscalls.sh: $kind did not start on port $port" >&2
        exit 1
    fi
    # From here the cleanup trap kills the server itself; perf then exits on its own.
    local perf_pid=$SERVER_PID
    SERVER_PID=$pid
    timeout 300 taskset -c 1 "$SB" bench --addr "127.0.0.1:$port" --mode "$mode" \
        --conns "$conns" --depth "$depth" --size "$size" --messages "$messages" \
        --duration 280 --warmup 0 --quiet --json >"$file.json"
    kill -TERM "$pid"
    timeout 60 tail --pid="$perf_pid" -f /dev/null || kill -KILL "$pid"
    wait "$perf_pid" || true
    SERVER_PID=""
    local echoed
    echoed=$(jq .messages "$file.json")
    if [[ "$(jq .errors "$file.json")" != 0 ]]; then
        echo "syscalls.sh: $kind run reported errors (see $file.json)" >&2
        exit 1
    fi
    # perf -x, lines: value,unit,event,...; task-clock is in milliseconds.
    awk -F, -v m="$echoed" -v kind="$kind" -v shape="$mode:$conns:$depth:$size" '
        $3 ~ /sys_enter_/ { sub(/.*sys_enter_/, "", $3); name = $3
            if (name ~ /^(read|readv|recvfrom|recvmsg)$/) reads += $1
            else if (name ~ /^(write|writev|sendto|sendmsg)$/) writes += $1
            else if (name ~ /^epoll/) polls += $1 }
        $3 == "context-switches" { switches = $1 }
        $3 == "task-clock" { cpu_ms = $1 }
        END { printf "%-12s %-20s %9d %8.3f %8.3f %8.3f %9.4f %9.2f\n", kind, shape, m,
                  reads / m, writes / m, polls / m, switches / m, cpu_ms * 1000 / m }
    ' "$file.perf"
}

build_binaries
mkdir -p "$OUT"

printf '%-12s %-20s %9s %8s %8s %8s %9s %9s\n' server shape messages \
    reads writes polls switches "CPU us"
for shape in $SHAPES; do
    IFS=: read -r mode conns depth size messages <<<"$shape"
    for kind in $KINDS; do
        count "$kind" "$mode" "$conns" "$depth" "$size" "$messages"
    done
done
echo "(per echoed message: reads = read/readv/recvfrom/recvmsg, writes = write/writev/"
echo " sendto/sendmsg, polls = epoll_wait/epoll_pwait; CPU us = the server's task-clock)"
