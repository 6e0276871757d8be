# Shared by the benchmark scripts (compare.sh, callgrind.sh, syscalls.sh); sourced,
# not run. Expects to be sourced from the repository's top directory.
#
# Gives: SB and PEER (the two release binaries), server_command (how each kind of
# server is started), SERVER_PID (the server a script has running, killed if the
# script exits or is interrupted), port_free, next_port (from $port upwards, the next
# port nothing listens on), wait_listening (until the server just started listens),
# stop_server and build_binaries.

SB=target/release/switchboard
PEER=target/release/examples/tokio_peer
SERVER_PID=""

cleanup() {
    if [[ -n "$SERVER_PID" ]]; then
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

# stop_server: SIGTERM to SERVER_PID, then SIGKILL if it still runs 10 s later.
stop_server() {
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 200); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

# server_command KIND PORT: sets SERVER_COMMAND to the command line of an echo server
# of KIND (switchboard or tokio) serving TCP and UDP on 127.0.0.1:PORT, quiet but for
# warnings.
server_command() {
    case "$1" in
        switchboard)
            # SERVER_EXTRA: more flags for the switchboard server (say "--threads 2").
            # shellcheck disable=SC2206
            SERVER_COMMAND=("$SB" echo --tcp "127.0.0.1:$2" --udp "127.0.0.1:$2" --log-level warn
                ${SERVER_EXTRA:-})
            ;;
        tokio) SERVER_COMMAND=("$PEER" --tcp "127.0.0.1:$2" --udp "127.0.0.1:$2") ;;
        *)
            echo "unknown server kind $1" >&2
            exit 2
            ;;
    esac
}

# port_free PORT: true when nothing listens on 127.0.0.1:PORT.
port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# next_port: the next port after $port that nothing listens on, into $port.
next_port() {
    port=$((port + 1))
    while ! port_free "$port"; do port=$((port + 1)); done
}

# wait_listening PORT: returns once something listens on 127.0.0.1:PORT; if the
# server ($SERVER_PID) exits first, or 10 s pass, says so, kills it and exits 1, rather
# than wait for ever.
wait_listening() {
    local tries=0
    while port_free "$1"; do
        if ! kill -0 "$SERVER_PID" 2>/dev/null || ((++tries > 200)); then
            echo "the server (pid $SERVER_PID) is not listening on port $1" >&2
            cleanup
            exit 1
        fi
        sleep 0.05
    done
}

# build_binaries: switchboard and the tokio peer, release.
build_binaries() {
    echo "building release binaries..."
    cargo build --release --quiet --bin switchboard
    cargo build --release --quiet --features tokio-peer --example tokio_peer
}
