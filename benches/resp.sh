#!/usr/bin/env bash
# The Redis-compatible example (examples/resp.rs) against a real redis-server, both
# driven by redis-benchmark: requests per second and server CPU time per request, in
# paired rounds, and the system calls each makes per request.
#
#   benches/resp.sh
#   ROUNDS=5 PIPELINES="16" TESTS="get" benches/resp.sh
#
# Servers (KINDS): resp (the example, one send per reply: the plain way), batch (the
# example with --batch: a whole read's requests answered with one send), redis
# (redis-server --save '' --appendonly no, on loopback). In each round every kind
# runs every test at every pipeline depth, one after the other, so the kinds of one
# round share the machine's conditions; the summary gives medians over rounds and the
# paired ratios against redis.
#
# Each run: a fresh server pinned to core 0 (taskset -c 0), the key the test reads set
# beforehand, then `redis-benchmark -t TEST -P DEPTH -c CLIENTS -n N --csv` pinned to
# core 1. The server's CPU time is its utime + stime from /proc/PID/stat (all its
# threads) just before and just after the benchmark, divided by N. Each run is bounded
# by a timeout and uses its own port on 127.0.0.1.
#
# Then, unless SYSCALLS=0, one run per kind and depth (the `get` test) under `perf stat`
# counting the server's system calls (needs perf with tracepoints: root, or
# kernel.perf_event_paranoid <= -1): reads, writes and epoll waits per request.
#
# Environment: ROUNDS (3), TESTS ("set get"), PIPELINES ("1 16"), CLIENTS (50), N1
# (300000: requests per run at -P 1), NP (3000000: requests per run when pipelined;
# enough that a run lasts seconds, as CPU time comes in 10 ms ticks), KINDS ("resp
# batch redis"), SYSCALLS (1), OUT (target/bench-resp).
set -euo pipefail

ROUNDS=${ROUNDS:-3}
TESTS=${TESTS:-"set get"}
PIPELINES=${PIPELINES:-"1 16"}
CLIENTS=${CLIENTS:-50}
N1=${N1:-300000}
NP=${NP:-3000000}
KINDS=${KINDS:-"resp batch redis"}
SYSCALLS=${SYSCALLS:-1}
OUT=${OUT:-target/bench-resp}

cd "$(dirname "$0")/.."
# shellcheck source=benches/common.sh
source benches/common.sh
RESP=target/release/examples/resp
TICKS=$(getconf CLK_TCK)
port=$((26000 + RANDOM % 4000))

for tool in redis-server redis-benchmark redis-cli; do
    if ! command -v "$tool" >/dev/null; then
        echo "resp.sh: $tool is missing (Debian/Ubuntu: redis-server, redis-tools)" >&2
        exit 2
    fi
done

# start_server KIND PORT LOG: the server pinned to core 0; returns once it listens.
start_server() {
    local kind=$1 port=$2 log=$3
    case "$kind" in
        resp) taskset -c 0 "$RESP" --addr "127.0.0.1:$port" 2>"$log" & ;;
        batch) taskset -c 0 "$RESP" --addr "127.0.0.1:$port" --batch 2>"$log" & ;;
        redis)
            taskset -c 0 redis-server --port "$port" --bind 127.0.0.1 --save '' \
                --appendonly no --daemonize no --logfile "$log" &
            ;;
        *)
            echo "resp.sh: unknown server kind $kind" >&2
            exit 2
            ;;
    esac
    SERVER_PID=$!
    wait_listening "$port"
}

# cpu_ticks PID: the process's user + system time so far, in clock ticks (fields 14
# and 15 of /proc/PID/stat, counted after the command name, which may hold spaces).
cpu_ticks() {
    sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

# requests DEPTH: requests per run.
requests() {
    if [[ "$1" == 1 ]]; then echo "$N1"; else echo "$NP"; fi
}

# benchmark PORT TEST DEPTH N: redis-benchmark, bounded, on core 1; its CSV on stdout.
benchmark() {
    local port=$1 test=$2 depth=$3 n=$4
    # The key GET reads (redis-benchmark's default 3-byte value), so GET finds it.
    redis-cli -p "$port" SET 'key:__rand_int__' xxx >/dev/null
    timeout 600 taskset -c 1 redis-benchmark -p "$port" -t "$test" -P "$depth" \
        -c "$CLIENTS" -n "$n" --csv
}

# run_one KIND TEST DEPTH ROUND: one measured run; appends a line to $OUT/runs.tsv.
run_one() {
    local kind=$1 test=$2 depth=$3 round=$4
    local n file before after rps
    n=$(requests "$depth")
    file="$OUT/$kind-$test-P$depth-$round"
    next_port
    start_server "$kind" "$port" "$file.log"
    before=$(cpu_ticks "$SERVER_PID")
    benchmark "$port" "$test" "$depth" "$n" >"$file.csv"
    after=$(cpu_ticks "$SERVER_PID")
    stop_server
    rps=$(awk -F'"' 'NR == 2 {print $4}' "$file.csv")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$test" "$depth" "$round" "$rps" \
        "$((after - before))" "$n" >>"$OUT/runs.tsv"
    printf 'round %s  -P %-2s %-4s %-5s %10s req/s  %6.3f us CPU/req\n' "$round" "$depth" \
        "$test" "$kind" "$rps" "$(echo "($after - $before) * 1000000 / $TICKS / $n" | bc -l)"
}

# count_syscalls KIND DEPTH: one `get` run with perf counting the server's calls.
count_syscalls() {
    local kind=$1 depth=$2 n perf_pid file
    n=$(requests "$depth")
    file="$OUT/syscalls-$kind-P$depth"
    next_port
    start_server "$kind" "$port" "$file.log"
    perf stat -x, -o "$file.perf" -p "$SERVER_PID" -e "$EVENTS" &
    perf_pid=$!
    # (perf needs a moment to attach; what it misses is before the run anyway.)
    sleep 0.5
    benchmark "$port" get "$depth" "$n" >"$file.csv"
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
    stop_server
    python3 - "$file.perf" "$kind" "$depth" "$n" <<'PY'
import sys
path, kind, depth, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
counts = {}
for line in open(path):
    fields = line.strip().split(",")
    if len(fields) > 2 and fields[2].startswith("syscalls:sys_enter_"):
        counts[fields[2][len("syscalls:sys_enter_"):]] = int(fields[0]) if fields[0].isdigit() else 0
reads = sum(counts.get(c, 0) for c in ("read", "readv", "recvfrom", "recvmsg"))
writes = sum(counts.get(c, 0) for c in ("write", "writev", "sendto", "sendmsg"))
waits = sum(counts.get(c, 0) for c in ("epoll_wait", "epoll_pwait"))
print(f"-P {depth:<2} {kind:<5} per request: reads {reads / n:.4f}, writes {writes / n:.4f}, "
      f"epoll waits {waits / n:.4f}")
PY
}

echo "building the example..."
cargo build --release --quiet --example resp
mkdir -p "$OUT"
rm -f "$OUT"/*.csv "$OUT"/*.log "$OUT"/*.perf "$OUT/runs.tsv"

for round in $(seq "$ROUNDS"); do
    for depth in $PIPELINES; do
        for test in $TESTS; do
            for kind in $KINDS; do
                run_one "$kind" "$test" "$depth" "$round"
            done
        done
    done
done

echo
echo "medians over $ROUNDS rounds ($(date -u +%Y-%m-%d), $(nproc) cores," \
    "$(lscpu | sed -n 's/^Model name: *//p'), redis-server $(redis-server --version |
        sed -n 's/.*v=\([^ ]*\).*/\1/p'), $CLIENTS clients)"
python3 - "$OUT/runs.tsv" "$TICKS" <<'PY'
import statistics, sys
from collections import defaultdict
path, ticks = sys.argv[1], int(sys.argv[2])
runs = defaultdict(dict)  # (test, depth) -> kind -> round -> (rps, cpu us per request)
for line in open(path):
    kind, test, depth, rnd, rps, cpu, n = line.split("\t")
    runs[(test, int(depth))].setdefault(kind, {})[rnd] = (float(rps), int(cpu) * 1e6 / ticks / int(n))
med = statistics.median
print(f"{'':10} {'server':<6} {'req/s':>10} {'CPU us/req':>10} {'vs redis: req/s':>16} {'CPU/req':>8}")
for (test, depth), kinds in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    redis = kinds.get("redis", {})
    for kind, by_round in kinds.items():
        rps = med(r for r, _ in by_round.values())
        cpu = med(c for _, c in by_round.values())
        ratios = ""
        if kind != "redis" and redis:
            paired = [(by_round[r], redis[r]) for r in by_round if r in redis]
            rps_ratio = med(a[0] / b[0] for a, b in paired)
            cpu_ratio = med(a[1] / b[1] for a, b in paired)
            ratios = f"{rps_ratio:>16.2f} {cpu_ratio:>8.2f}"
        print(f"-P {depth:<2} {test:<4} {kind:<6} {rps:>10.0f} {cpu:>10.3f} {ratios}")
PY

if [[ "$SYSCALLS" == 1 ]]; then
    CALLS="read readv recvfrom recvmsg write writev sendto sendmsg epoll_wait epoll_pwait"
    EVENTS=$(printf 'syscalls:sys_enter_%s,' $CALLS)
    EVENTS=${EVENTS%,}
    if ! perf stat -e syscalls:sys_enter_write -x, true >/dev/null 2>&1; then
        echo "resp.sh: perf cannot read the syscall tracepoints here; no system call counts" >&2
        exit 0
    fi
    echo
    echo "system calls per request (redis-benchmark -t get, one run each)"
    for depth in $PIPELINES; do
        for kind in $KINDS; do
            count_syscalls "$kind" "$depth"
        done
    done
fi
