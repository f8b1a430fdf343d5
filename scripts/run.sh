#!/bin/sh
# Starts lockproxy for a try-out. `make run` calls it as: sh scripts/run.sh build/lockproxy
#
# The upstream is, in order: $LOCKPROXY_UPSTREAM, the `upstream` line of the config file,
# or else a private redis-server started here on a free loopback port (its files in a temp
# dir). The config file is $LOCKPROXY_CONF (default conf/lockproxy.conf); the proxy listens
# on $LOCKPROXY_LISTEN (default: the file's listen, 127.0.0.1:6380). The audit log goes to
# $LOCKPROXY_LOG (default <build dir>/audit.log, the previous run's kept as audit.log.1),
# never to the terminal: the proxy's own messages go to stderr, through tee into
# <build dir>/lockproxy.out, which tells when it is listening. Ctrl-C or SIGTERM stops the
# proxy (which drains and exits) and then the private redis-server; Ctrl-C exits 0.
set -eu

bin=${1:-build/lockproxy}
conf=${LOCKPROXY_CONF:-conf/lockproxy.conf}
listen=${LOCKPROXY_LISTEN:-127.0.0.1:6380}
upstream=${LOCKPROXY_UPSTREAM:-}
bindir=$(dirname "$bin")
log=${LOCKPROXY_LOG:-$bindir/audit.log}
out=$bindir/lockproxy.out

say() { printf '%s\n' "$*"; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }

[ -x "$bin" ] || die "$bin is missing or not executable: run 'make build' first"

# The value of a directive in the config file ("" when absent).
conf_value() {
    [ -f "$conf" ] || return 0
    sed -n "s/^[[:space:]]*$1[[:space:]][[:space:]]*\([^[:space:]#]*\).*/\1/p" "$conf" |
        tail -n 1 | sed 's/^"\(.*\)"$/\1/'
}

tmp=""
redis_pid=""
proxy_pid=""
tee_pid=""
stopping=0

cleanup() {
    [ "$stopping" -eq 1 ] && return 0
    stopping=1
    if [ -n "$proxy_pid" ] && kill -0 "$proxy_pid" 2>/dev/null; then
        # SIGINT, as Ctrl-C has sent it already (a second one changes nothing): the proxy
        # drains in-flight replies (shutdown-timeout, 5 s by default) and exits 0.
        kill -INT "$proxy_pid" 2>/dev/null || true
        i=0
        while kill -0 "$proxy_pid" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        kill -KILL "$proxy_pid" 2>/dev/null || true
        wait "$proxy_pid" 2>/dev/null || true
    fi
    if [ -n "$redis_pid" ] && kill -0 "$redis_pid" 2>/dev/null; then
        kill -TERM "$redis_pid" 2>/dev/null || true
        i=0
        while kill -0 "$redis_pid" 2>/dev/null && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
        kill -KILL "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
    fi
    # tee ends once the proxy has closed its end of the pipe.
    if [ -n "$tee_pid" ]; then wait "$tee_pid" 2>/dev/null || true; fi
    [ -n "$tmp" ] && rm -rf "$tmp"
    return 0
}
trap 'cleanup' EXIT
trap 'say ""; say "stopping lockproxy"; cleanup; say_log; exit 0' INT
trap 'cleanup; exit 143' TERM HUP

say_log() {
    say "audit log: $log (JSON Lines); read it with: $bin report $log"
}

# A pseudo-random port in 20000-31999 (below the usual ephemeral range).
random_port() {
    awk -v seed="$$$(date +%N 2>/dev/null || echo 0)" \
        'BEGIN { srand(seed % 2147483647); print 20000 + int(rand() * 12000) }'
}

# 0 when a Redis answers PING on 127.0.0.1:$1 (or on host $2).
pings() {
    case "$(redis-cli -h "${2:-127.0.0.1}" -p "$1" PING 2>/dev/null)" in
        PONG|*NOAUTH*) return 0 ;;
        *) return 1 ;;
    esac
}

start_private_redis() {
    command -v redis-server >/dev/null 2>&1 || die "redis-server is not installed (make deps)"
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/lockproxy-run.XXXXXX")
    tries=0
    while [ "$tries" -lt 20 ]; do
        tries=$((tries + 1))
        port=$(random_port)
        pings "$port" && continue          # something already answers there
        redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
            --dir "$tmp" --logfile "$tmp/redis.log" --daemonize no &
        redis_pid=$!
        i=0
        while [ "$i" -lt 50 ]; do
            if ! kill -0 "$redis_pid" 2>/dev/null; then break; fi
            if pings "$port"; then
                redis_port=$port
                return 0
            fi
            sleep 0.1
            i=$((i + 1))
        done
        # Not up: the port was probably taken. Try another one.
        kill -KILL "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
        redis_pid=""
    done
    die "could not start a private redis-server (see $tmp/redis.log)"
}

set --
if [ -f "$conf" ]; then
    set -- -c "$conf"
else
    say "note: $conf not found; running with built-in defaults" >&2
fi

if [ -n "$upstream" ]; then
    upstream_shown=$upstream
    set -- "$@" --upstream "$upstream"
elif [ -n "$(conf_value upstream)" ]; then
    upstream_shown=$(conf_value upstream)
else
    start_private_redis
    upstream_shown="127.0.0.1:$redis_port"
    set -- "$@" --upstream "$upstream_shown"
fi

if [ -z "${LOCKPROXY_LISTEN:-}" ] && [ -n "$(conf_value listen)" ]; then
    listen=$(conf_value listen)
else
    set -- "$@" --listen "$listen"
fi

# The audit log in a file of its own; the previous run's is kept as .1.
set -- "$@" --log "$log"
if [ -z "${LOCKPROXY_LOG:-}" ] && [ -s "$log" ]; then mv -f "$log" "$log.1"; fi

# The proxy's messages: to the terminal (stderr) and to $out, through a FIFO into tee. tee
# ignores SIGINT so that the proxy's last messages, written while it drains, still show.
[ -n "$tmp" ] || tmp=$(mktemp -d "${TMPDIR:-/tmp}/lockproxy-run.XXXXXX")
mkfifo "$tmp/msgs"
: > "$out"
(trap '' INT; exec tee "$out" < "$tmp/msgs" >&2) &
tee_pid=$!
"$bin" "$@" 2>"$tmp/msgs" &
proxy_pid=$!

# Where a client reaches it: host and port of HOST:PORT or [IPv6]:PORT.
listen_port=${listen##*:}
listen_host=${listen%:*}
listen_host=${listen_host#[}
listen_host=${listen_host%]}
case "$listen_host" in
    ''|0.0.0.0|'*') listen_host=127.0.0.1 ;;
    ::) listen_host=::1 ;;
esac

# Wait until the proxy says it is listening (it does once its address is bound, so another
# server on that port is never taken for it), or report that it stopped.
i=0
while ! grep -q '^lockproxy: listening on ' "$out" 2>/dev/null; do
    if ! kill -0 "$proxy_pid" 2>/dev/null; then
        status=0
        wait "$proxy_pid" || status=$?
        proxy_pid=""
        die "lockproxy did not start (exit status $status): see its message above"
    fi
    i=$((i + 1))
    [ "$i" -lt 100 ] || die "lockproxy did not start listening on $listen within 10 s"
    sleep 0.1
done

if [ -n "$redis_pid" ]; then
    say "lockproxy listening on $listen → redis $upstream_shown (private, stopped with the proxy)"
else
    say "lockproxy listening on $listen → redis $upstream_shown"
fi
case "$listen" in
    unix:*) say "try: redis-cli -s ${listen#unix:}" ;;
    *) if [ "$listen_host" = 127.0.0.1 ]; then say "try: redis-cli -p $listen_port"
       else say "try: redis-cli -h $listen_host -p $listen_port"; fi ;;
esac
say_log
say "Ctrl-C stops it"

# Wait for the proxy; a trapped signal interrupts the wait and runs cleanup.
status=0
wait "$proxy_pid" || status=$?
proxy_pid=""
if [ "$stopping" -eq 0 ]; then
    say "lockproxy exited with status $status" >&2
    exit "$status"
fi
