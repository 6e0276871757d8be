#!/usr/bin/env bash
# TLS: switchboard echo over TLS against the tokio peer over tokio-rustls
# (examples/tokio_peer.rs --tls-cert/--tls-key), in interleaved rounds (A B A B ...),
# with the same load generator, the same certificate and the same cipher suite (both
# servers run rustls's defaults with the ring provider; each run's summary says what
# was agreed). Prints the medians and the paired ratios.
#
#   benches/tls.sh                          # everything, 5 rounds
#   ROUNDS=3 PARTS="echo handshakes" benches/tls.sh
#
# Parts:
#   echo        T1 100 conns, depth 16, 64 B;  T2 10 conns, depth 4, 16 KiB: messages
#               per server CPU-second, as compare.sh measures them
#   handshakes  --mode handshakes, 16 at a time over 8 source addresses (each client
#               port stays in TIME_WAIT for a minute after its close): handshakes/s
#               and handshakes per server CPU-second
#   memory      $IDLE_CONNS connections that each did their handshake and one echo,
#               then sit idle: the server's RSS growth per connection, over TLS and
#               (for reference) without; both servers
#
# The server runs on core 0 (taskset -c 0), the load generator on core 1; the load
# generator reads the server's CPU time and memory from /proc (--server-pid), so the
# figures cover exactly the measured window. Every run is bounded (warm-up + duration,
# plus a hard timeout) and has its own port on 127.0.0.1. The whole script takes about
# four minutes once the binaries are built.
#
# Environment: ROUNDS (5), DURATION (3 s), WARMUP (1 s), PARTS ("echo handshakes
# memory"), IDLE_CONNS (2000), OUT (target/bench-results/tls), BASE_PORT (a random
# port in 20000-25999; every run takes the next free one).
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-3}
WARMUP=${WARMUP:-1}
PARTS=${PARTS:-"echo handshakes memory"}
IDLE_CONNS=${IDLE_CONNS:-2000}
OUT=${OUT:-target/bench-results/tls}
BASE_PORT=${BASE_PORT:-$((20000 + RANDOM % 6000))}

cd "$(dirname "$0")/.."
# shellcheck source=benches/common.sh
source benches/common.sh

CERT=$OUT/cert.pem
KEY=$OUT/key.pem

# make_certificate: a P-256 certificate for 127.0.0.1 and localhost. It is its own CA
# for --tls-ca, but marked as no CA (CA:FALSE): rustls refuses a certificate marked as
# a CA when a server presents it as its own (openssl req -x509 marks it so by default).
make_certificate() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$KEY" -out "$CERT" -days 30 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -addext "basicConstraints=critical,CA:FALSE" 2>/dev/null
}

# start_server KIND PORT [plain]: starts an echo server of KIND (switchboard or tokio)
# pinned to core 0, serving TLS on 127.0.0.1:PORT (or plain TCP with "plain"); waits
# until it listens.
start_server() {
    local kind=$1 port=$2 plain=${3:-}
    case "$kind$plain" in
        # (UDP on the same port: switchboard wants a plain endpoint besides its TLS
        # one; no run here sends it anything.)
        switchboard) SERVER_COMMAND=("$SB" echo --tcp "tls://127.0.0.1:$port"
            --udp "127.0.0.1:$port" --tls-cert "$CERT" --tls-key "$KEY" --log-level warn) ;;
        tokio) SERVER_COMMAND=("$PEER" --tcp "127.0.0.1:$port" --tls-cert "$CERT"
            --tls-key "$KEY") ;;
        *plain) server_command "$kind" "$port" ;;
    esac
    # (The peer announces its endpoints on stderr; switchboard only warns there.)
    if [[ "$kind" == tokio ]]; then
        taskset -c 0 "${SERVER_COMMAND[@]}" 2>/dev/null &
    else
        taskset -c 0 "${SERVER_COMMAND[@]}" &
    fi
    SERVER_PID=$!
    wait_listening "$port"
}

# run_one KIND NAME ROUND PORT ARGS...: one bounded bench run against a fresh server;
# the summary goes to $OUT/NAME-KIND-ROUND.json.
run_one() {
    local kind=$1 name=$2 round=$3 port=$4
    shift 4
    local file="$OUT/$name-$kind-$round.json" plain=""
    [[ "$name" == *plain* ]] && plain=plain
    start_server "$kind" "$port" $plain
    if ! timeout $((${DURATION%.*} + ${WARMUP%.*} + 90)) taskset -c 1 "$SB" bench \
        --addr "127.0.0.1:$port" "$@" --server-pid "$SERVER_PID" --json --quiet >"$file"; then
        echo "tls.sh: $name $kind round $round reported errors (see $file)" >&2
    fi
    stop_server
    printf '%-12s %-11s round %s: %s\n' "$name" "$kind" "$round" "$(jq -r '
        "\(.msgs_per_sec|floor) \(if .mode == "handshakes" then "handshakes" else "msgs" end)/s, " +
        "\(.server.msgs_per_cpu_sec|floor) per server CPU-s, " +
        "\(.tls.cipher_suite // "plain"), errors \(.errors + .connect_failures)"' "$file")"
}

TLS_FLAGS=(--tls --tls-ca "$CERT")

echo_args() {
    case "$1" in
        T1) echo "--conns 100 --depth 16 --size 64" ;;
        T2) echo "--conns 10 --depth 4 --size 16384" ;;
    esac
}

build_binaries
mkdir -p "$OUT"
rm -f "$OUT"/*.json
make_certificate

port=$BASE_PORT
for part in $PARTS; do
    for round in $(seq "$ROUNDS"); do
        for kind in switchboard tokio; do
            case "$part" in
                echo)
                    for scenario in T1 T2; do
                        next_port
                        # shellcheck disable=SC2046
                        run_one "$kind" "$scenario" "$round" "$port" "${TLS_FLAGS[@]}" \
                            $(echo_args "$scenario") --duration "$DURATION" --warmup "$WARMUP"
                    done
                    ;;
                handshakes)
                    next_port
                    run_one "$kind" handshakes "$round" "$port" "${TLS_FLAGS[@]}" \
                        --mode handshakes --conns 16 --src-ips 8 \
                        --duration "$DURATION" --warmup "$WARMUP"
                    ;;
                memory)
                    # One round is enough: memory does not vary run to run as time does.
                    [[ "$round" == 1 ]] || continue
                    # Each connection sends one message (the budget, dealt one to each),
                    # so the server's RSS is read once all of them have been echoed.
                    next_port
                    run_one "$kind" idle-tls 1 "$port" "${TLS_FLAGS[@]}" \
                        --conns "$IDLE_CONNS" --messages "$IDLE_CONNS"
                    next_port
                    run_one "$kind" idle-plain 1 "$port" \
                        --conns "$IDLE_CONNS" --messages "$IDLE_CONNS"
                    ;;
                *)
                    echo "unknown part $part" >&2
                    exit 2
                    ;;
            esac
        done
    done
done

echo
echo "medians over rounds ($(date -u +%Y-%m-%d), $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'))"
python3 - "$OUT" <<'PY'
import glob, json, os, statistics, sys
out = sys.argv[1]
med = statistics.median

def load(name, kind):
    runs = []
    for f in sorted(glob.glob(os.path.join(out, f"{name}-{kind}-*.json"))):
        try:
            r = json.load(open(f))
        except ValueError:
            continue
        if r.get("server"):
            runs.append(r)
    return runs

print(f"{'':11} {'server':<11} {'per s':>9} {'p99 us':>8} {'CPU s':>6} {'per CPU-s':>10} {'hs p50 us':>10} {'suite':<26} {'errors':>6}")
for name in ("T1", "T2", "handshakes"):
    kinds = {k: load(name, k) for k in ("switchboard", "tokio")}
    for kind, runs in kinds.items():
        if not runs:
            continue
        hs = [r["tls"]["handshake"]["p50_us"] for r in runs if r["tls"]["handshake"]]
        print(f"{name:11} {kind:<11} {med([r['msgs_per_sec'] for r in runs]):>9.0f} "
              f"{med([r['latency']['p99_us'] for r in runs]):>8.1f} "
              f"{med([r['server']['cpu_secs'] for r in runs]):>6.2f} "
              f"{med([r['server']['msgs_per_cpu_sec'] for r in runs]):>10.0f} "
              f"{med(hs) if hs else float('nan'):>10.0f} "
              f"{runs[0]['tls']['cipher_suite'] or '-':<26} "
              f"{sum(r['errors'] + r['connect_failures'] for r in runs):>6}")
    if kinds["switchboard"] and kinds["tokio"]:
        pairs = list(zip(kinds["switchboard"], kinds["tokio"]))
        ratio = med([a["server"]["msgs_per_cpu_sec"] / b["server"]["msgs_per_cpu_sec"] for a, b in pairs])
        rate = med([a["msgs_per_sec"] / b["msgs_per_sec"] for a, b in pairs])
        print(f"{name:11} ratio switchboard/tokio: per server CPU-second {ratio:.2f}, per second {rate:.2f} (paired median of {len(pairs)})")

for kind in ("switchboard", "tokio"):
    for name in ("idle-tls", "idle-plain"):
        runs = load(name, kind)
        if not runs:
            continue
        r = runs[0]
        s, n = r["server"], r["connected"]
        shaken = (s["rss_connected_kib"] - s["rss_before_kib"]) * 1024 / n
        echoed = (s["rss_end_kib"] - s["rss_before_kib"]) * 1024 / n
        print(f"{name:11} {kind:<11} {n} conns: RSS {s['rss_before_kib']} -> {s['rss_connected_kib']} "
              f"(connected) -> {s['rss_end_kib']} KiB (each echoed once): "
              f"{shaken:.0f} B per connection connected, {echoed:.0f} B after one echo; "
              f"errors {r['errors'] + r['connect_failures']}")
PY
