#!/usr/bin/env bash
# `make bench`: redis-server direct, through lockproxy, through twemproxy
# (nutcracker) and through haproxy in TCP mode, all on loopback, measured in alternation.
#
# Usage: bash tests/bench/run.sh [BUILD_DIR]   (default: build; `make bench` runs it)
#
# What it measures, in this order:
#   1. resident memory: VmRSS of each proxy before and while BENCH_CONNS (5000) client
#      connections are held idle (one PING each), as KiB per connection; measured first, on
#      freshly started proxies, so no earlier traffic has grown their heaps;
#   2. a short warm-up of every workload on every target, which also sizes -n so that one
#      run takes about BENCH_SECONDS;
#   3. BENCH_ROUNDS rounds (default 3); in each, every workload runs on direct, lockproxy,
#      twemproxy, haproxy in turn:
#        - redis-benchmark -c 50, SET and GET, pipeline 1 and 16 (req/s), with the proxy's
#          CPU time (utime+stime from /proc/PID/stat) per request;
#        - single-client GET latency, p50 (and mean, p99), timed per request by
#          tests/bench/latency.c (redis-benchmark's histogram is too coarse for this);
#        - the lock workload (tests/bench/lockload.c, 50 clients, 1000 keys): the legacy
#          SETNX/EXPIRE/DEL pattern through lockproxy in enforce mode against the safe pattern
#          written by hand (SET NX PX + EVALSHA compare-and-delete) straight to Redis; the
#          legacy pattern direct and the safe one through lockproxy are shown for reference;
#        - with BENCH_ADMIN=1 (the default), the four redis-benchmark runs also on a second
#          lockproxy, "lockproxy+admin", with the admin listener on and GET /metrics scraped
#          once a second for as long as it runs (a bash loop over /dev/tcp): the cost of
#          the metrics, next to the plain lockproxy run just before it;
#        - the pooled lock workload (tests/bench/poolload.c), on direct and lockproxy only:
#          BENCH_POOL_THREADS (8) threads sharing a pool of as many connections, each cycle
#          SET lock:pool:<k> <uuid> NX EX 10 on one pooled connection and DEL on another (as
#          redis-py's ConnectionPool hands them out; owner=auto accepts the release), on
#          BENCH_POOL_KEYS (1) keys.
# Output: the medians as a markdown table with the ratios and targets (printed, never
# asserted), in BUILD/bench/results.md and on stdout; every raw number in
# BUILD/bench/results.json. Logs of every process are left in BUILD/bench/work/.
#
# Environment: BENCH_ROUNDS (3), BENCH_SECONDS (2.5, per throughput run), BENCH_LAT_SECONDS
# (1.5), BENCH_LOCK_SECONDS (3), BENCH_CONNS (5000), BENCH_CLIENTS (50), BENCH_LOCK_KEYS
# (1000), BENCH_POOL_THREADS (8), BENCH_POOL_KEYS (1), BENCH_POOL_SECONDS (3),
# BENCH_N_P1 / BENCH_N_P16 / BENCH_N_LAT (fixed -n instead of the sized one),
# HAPROXY_NBTHREAD (1: every proxy measured gets one thread, as lockproxy and twemproxy have),
# BENCH_BUDGET (540: seconds the whole run may take; later rounds are shortened to fit),
# BENCH_ADMIN (1: also measure lockproxy+admin; 0: skip it).
set -eu

build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cd "$top"

rounds=${BENCH_ROUNDS:-3}
run_seconds=${BENCH_SECONDS:-2.5}
lat_seconds=${BENCH_LAT_SECONDS:-1.5}
lock_seconds=${BENCH_LOCK_SECONDS:-3}
conns=${BENCH_CONNS:-5000}
clients=${BENCH_CLIENTS:-50}
lock_keys=${BENCH_LOCK_KEYS:-1000}
pool_threads=${BENCH_POOL_THREADS:-8}
pool_keys=${BENCH_POOL_KEYS:-1}
pool_seconds=${BENCH_POOL_SECONDS:-3}
if [ "$pool_keys" = 1 ]; then pool_keys_word=key; else pool_keys_word=keys; fi
hap_threads=${HAPROXY_NBTHREAD:-1}
budget=${BENCH_BUDGET:-540}
admin=${BENCH_ADMIN:-1}
keyspace=100000

targets="direct lockproxy twemproxy haproxy"
# The throughput workloads also run on lockproxy+admin (BENCH_ADMIN=1), right after lockproxy.
if [ "$admin" = 1 ]; then rps_targets="direct lockproxy lockproxy+admin twemproxy haproxy"; else rps_targets=$targets; fi
proxies="lockproxy twemproxy haproxy"
workloads="set_p1 get_p1 set_p16 get_p16"

say() { printf '%s\n' "$*"; }
note() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

t_begin=$(date +%s)

[ -d "$build" ] || die "$build does not exist: run 'make build' first"
out="$(cd "$build" && pwd)/bench"   # absolute: redis-server changes directory
work="$out/work"
raw="$work/raw.tsv"
meta="$work/meta.tsv"

# --- dependencies and helpers ------------------------------------------------------------
sh scripts/deps.sh nutcracker haproxy redis-tools
for cmd in redis-server redis-cli redis-benchmark nutcracker haproxy cc awk; do
    command -v "$cmd" >/dev/null 2>&1 || die "$cmd not found (sh scripts/deps.sh nutcracker haproxy)"
done
[ -x "$build/lockproxy" ] || die "$build/lockproxy is missing: run 'make build' first"

rm -rf "$work"
mkdir -p "$work"
cc -O2 -Wall -Wextra -Wno-unused-parameter -o "$out/lockload" "$here/lockload.c" -lhiredis ||
    die "could not build lockload (libhiredis-dev)"
cc -O2 -Wall -Wextra -Wno-unused-parameter -o "$out/poolload" "$here/poolload.c" -lhiredis -lpthread ||
    die "could not build poolload (libhiredis-dev)"
cc -O2 -Wall -Wextra -o "$out/idleconns" "$here/idleconns.c" || die "could not build idleconns"
cc -O2 -Wall -Wextra -o "$out/latency" "$here/latency.c" -lhiredis || die "could not build latency"

# File descriptors: each proxy needs two per idle client (client + upstream), Redis one.
want_fds=$((2 * conns + 1000))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want_fds" ]; then
    ulimit -n "$want_fds" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fi
fds=$(ulimit -n)
if [ "$fds" != unlimited ] && [ "$fds" -lt "$want_fds" ]; then
    conns=$(((fds - 1000) / 2))
    [ "$conns" -gt 0 ] || die "open file limit $fds is too low"
    note "open file limit is $fds: holding $conns idle connections instead of ${BENCH_CONNS:-5000}"
fi
hz=$(getconf CLK_TCK)

# --- processes ------------------------------------------------------------------------------
pids=""
holder=""
cleanup() {
    trap - EXIT INT TERM HUP
    [ -n "$holder" ] && kill -TERM "$holder" 2>/dev/null
    for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
    for p in $pids; do
        i=0
        while kill -0 "$p" 2>/dev/null && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
        kill -KILL "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'note interrupted; exit 130' INT
trap 'exit 143' TERM HUP

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Seven consecutive free ports from a random base in 20000-31999 (below the ephemeral range).
pick_ports() {
    local tries=0 base
    while [ "$tries" -lt 50 ]; do
        tries=$((tries + 1))
        base=$((20000 + (RANDOM % 1700) * 7))
        if port_free "$base" && port_free $((base + 1)) && port_free $((base + 2)) &&
            port_free $((base + 3)) && port_free $((base + 4)) && port_free $((base + 5)) &&
            port_free $((base + 6)); then
            echo "$base"
            return 0
        fi
    done
    die "no free ports found"
}
base=$(pick_ports)
rport=$base; lport=$((base + 1)); tport=$((base + 2)); hport=$((base + 3)); sport=$((base + 4))
aport=$((base + 5)); ahttp=$((base + 6))

# Waits until PID answers PING on PORT; NAME and LOG for the message when it does not.
wait_ready() {
    local name=$1 pid=$2 port=$3 log=$4 i=0
    while [ "$(redis-cli -h 127.0.0.1 -p "$port" PING 2>/dev/null)" != PONG ]; do
        kill -0 "$pid" 2>/dev/null || { tail -n 5 "$log" >&2; die "$name exited at start-up (see $log)"; }
        i=$((i + 1))
        [ "$i" -lt 100 ] || die "$name does not answer on port $port (see $log)"
        sleep 0.1
    done
}

redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no \
    --maxclients $((conns + 1000)) --dir "$work" --logfile "$work/redis.log" --daemonize no &
redis_pid=$!; pids="$redis_pid"
wait_ready redis-server "$redis_pid" "$rport" "$work/redis.log"

printf 'rule lock: enforce ttl=30s\n' >"$work/policy.conf"
"$build/lockproxy" --listen "127.0.0.1:$lport" --upstream "127.0.0.1:$rport" \
    --policy "$work/policy.conf" --log "$work/audit.log" >"$work/lockproxy.out" 2>&1 &
lockproxy_pid=$!; pids="$lockproxy_pid $pids"
wait_ready lockproxy "$lockproxy_pid" "$lport" "$work/lockproxy.out"

# lockproxy+admin: the same, with the admin listener, scraped once a second from now on.
ladmin_pid=""
if [ "$admin" = 1 ]; then
    "$build/lockproxy" --listen "127.0.0.1:$aport" --upstream "127.0.0.1:$rport" \
        --policy "$work/policy.conf" --log "$work/audit-admin.log" --admin "127.0.0.1:$ahttp" \
        >"$work/lockproxy-admin.out" 2>&1 &
    ladmin_pid=$!; pids="$ladmin_pid $pids"
    wait_ready lockproxy+admin "$ladmin_pid" "$aport" "$work/lockproxy-admin.out"
    # Each scrape reads the whole page; its requests counter goes to scrapes.txt.
    (
        while kill -0 "$ladmin_pid" 2>/dev/null; do
            if exec 3<>"/dev/tcp/127.0.0.1/$ahttp"; then
                printf 'GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n' >&3
                grep '^lockproxy_requests_total ' <&3 >>"$work/scrapes.txt" || true
                exec 3<&-
            fi
            sleep 1
        done
    ) 2>/dev/null &
    pids="$pids $!"
fi

cat >"$work/nutcracker.yml" <<EOF
bench:
  listen: 127.0.0.1:$tport
  hash: fnv1a_64
  distribution: ketama
  redis: true
  auto_eject_hosts: false
  servers:
   - 127.0.0.1:$rport:1
EOF
nutcracker -c "$work/nutcracker.yml" -s "$sport" -a 127.0.0.1 -o "$work/nutcracker.log" \
    >"$work/nutcracker.out" 2>&1 &
twemproxy_pid=$!; pids="$twemproxy_pid $pids"
wait_ready twemproxy "$twemproxy_pid" "$tport" "$work/nutcracker.log"

cat >"$work/haproxy.cfg" <<EOF
global
    maxconn $((conns + 1000))
    nbthread $hap_threads
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    maxconn $((conns + 1000))
frontend redis_in
    bind 127.0.0.1:$hport
    default_backend redis_out
backend redis_out
    server redis1 127.0.0.1:$rport
EOF
haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 &
haproxy_pid=$!; pids="$haproxy_pid $pids"
wait_ready haproxy "$haproxy_pid" "$hport" "$work/haproxy.log"

port_of() {
    case $1 in direct) echo "$rport" ;; lockproxy) echo "$lport" ;; lockproxy+admin) echo "$aport" ;;
        twemproxy) echo "$tport" ;; haproxy) echo "$hport" ;; esac
}
pid_of() {
    case $1 in direct) echo "" ;; lockproxy) echo "$lockproxy_pid" ;; lockproxy+admin) echo "$ladmin_pid" ;;
        twemproxy) echo "$twemproxy_pid" ;; haproxy) echo "$haproxy_pid" ;; esac
}
# utime+stime of PID in clock ticks, all threads included.
cpu_ticks() {
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo ""; return 0; }
    s=${s##*) }
    # shellcheck disable=SC2086
    set -- $s
    echo $((${12} + ${13}))
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$raw"; }  # target metric round value
calc() { awk "BEGIN { printf \"%.${2:-3}f\", $1 }"; }

say "bench: redis $rport, lockproxy $lport, twemproxy $tport, haproxy $hport${ladmin_pid:+, lockproxy+admin $aport (http $ahttp)} (logs in $work)"
: >"$raw"

# --- 1. resident memory with idle connections ------------------------------------------------
for t in $proxies; do
    pid=$(pid_of "$t")
    before=$(rss_kib "$pid")
    : >"$work/idle-$t.out"
    "$out/idleconns" 127.0.0.1 "$(port_of "$t")" "$conns" >>"$work/idle-$t.out" 2>&1 &
    holder=$!
    i=0
    while ! grep -q '^ready' "$work/idle-$t.out" && kill -0 "$holder" 2>/dev/null &&
        [ "$i" -lt 1200 ]; do sleep 0.1; i=$((i + 1)); done
    if grep -q '^ready' "$work/idle-$t.out"; then
        sleep 1
        after=$(rss_kib "$pid")
        record "$t" rss_before_kib 0 "$before"
        record "$t" rss_after_kib 0 "$after"
        record "$t" rss_kib_per_conn 0 "$(calc "($after - $before) / $conns" 3)"
        say "memory  $t: VmRSS $before -> $after KiB with $conns idle connections"
    else
        note "$t: could not hold $conns connections: $(tail -n 1 "$work/idle-$t.out")"
    fi
    kill -TERM "$holder" 2>/dev/null || true
    wait "$holder" 2>/dev/null || true
    holder=""
    sleep 1   # let the proxy close the upstream side
done

# --- workload runners -----------------------------------------------------------------------
# One redis-benchmark run of 50 clients: prints "rps cpu_us_per_request" ("n/a" for direct).
bench_run() {
    local t=$1 test=$2 pipe=$3 n=$4 pid c0 c1 line rps cpu=n/a
    pid=$(pid_of "$t")
    [ -n "$pid" ] && c0=$(cpu_ticks "$pid")
    line=$(redis-benchmark -h 127.0.0.1 -p "$(port_of "$t")" -c "$clients" -n "$n" \
        -r "$keyspace" -P "$pipe" -t "$test" --csv 2>>"$work/redis-benchmark.err" |
        tr -d '"' | awk -F, -v t="$(echo "$test" | tr a-z A-Z)" '$1 == t { print $2 }') || true
    [ -n "$pid" ] && c1=$(cpu_ticks "$pid")
    rps=${line:-}
    [ -n "$rps" ] || { note "$t $test P$pipe: redis-benchmark gave no result"; echo "n/a n/a"; return 0; }
    if [ -n "$pid" ] && [ -n "$c0" ] && [ -n "$c1" ]; then
        cpu=$(calc "($c1 - $c0) * 1000000 / $hz / $n" 4)
    fi
    echo "$rps $cpu"
}
# Single-client GET latency (tests/bench/latency.c): prints "p50_us mean_us p99_us rps".
lat_run() {
    local t=$1 n=$2 line
    line=$("$out/latency" 127.0.0.1 "$(port_of "$t")" "$n" "$keyspace" 2>>"$work/latency.err" |
        tr ' ' '\n' | awk -F= '{ v[$1] = $2 } END { if (v["rps"] != "") print v["p50_us"], v["mean_us"], v["p99_us"], v["rps"] }') || true
    [ -n "$line" ] || { note "$t latency: no result (see $work/latency.err)"; echo "n/a n/a n/a n/a"; return 0; }
    echo "$line"
}
# Lock workload: prints "cycles_per_s proxy_cpu_us_per_cycle" (n/a where they do not apply).
lock_run() {
    local t=$1 mode=$2 line pid c0="" c1=""
    pid=$(pid_of "$t")
    [ -n "$pid" ] && c0=$(cpu_ticks "$pid")
    line=$("$out/lockload" 127.0.0.1 "$(port_of "$t")" "$mode" "$clients" "$lock_keys" \
        "$lock_seconds" 2>>"$work/lockload.err") || note "$t $mode lock workload reported errors (see $work/lockload.err)"
    [ -n "$pid" ] && c1=$(cpu_ticks "$pid")
    echo "$t $mode $line" >>"$work/lockload.out"
    echo "$line" | tr ' ' '\n' | awk -F= -v c0="$c0" -v c1="$c1" -v hz="$hz" '
        { v[$1] = $2 }
        END {
            cps = (v["cycles_per_s"] == "") ? "n/a" : v["cycles_per_s"]
            cpu = (c0 == "" || c1 == "" || v["cycles"] + 0 == 0) ? "n/a" : \
                sprintf("%.2f", (c1 - c0) * 1000000 / hz / v["cycles"])
            print cps, cpu
        }'
}
# Pooled lock workload: prints "cycles_per_s proxy_cpu_us_per_cycle dels_not_1 contended"
# (n/a where they do not apply).
pool_run() {
    local t=$1 line pid c0="" c1=""
    pid=$(pid_of "$t")
    [ -n "$pid" ] && c0=$(cpu_ticks "$pid")
    line=$("$out/poolload" 127.0.0.1 "$(port_of "$t")" "$pool_threads" "$pool_seconds" \
        "$pool_keys" 2>>"$work/poolload.err") || note "$t pooled lock workload reported errors (see $work/poolload.err)"
    [ -n "$pid" ] && c1=$(cpu_ticks "$pid")
    echo "$t pooled $line" >>"$work/poolload.out"
    echo "$line" | tr ' ' '\n' | awk -F= -v c0="$c0" -v c1="$c1" -v hz="$hz" '
        { v[$1] = $2 }
        END {
            cps = (v["cycles_per_s"] == "") ? "n/a" : v["cycles_per_s"]
            cpu = (c0 == "" || c1 == "" || v["cycles"] + 0 == 0) ? "n/a" : \
                sprintf("%.2f", (c1 - c0) * 1000000 / hz / v["cycles"])
            dn = (v["dels_not_1"] == "") ? "n/a" : v["dels_not_1"]
            ct = (v["contended"] == "") ? "n/a" : v["contended"]
            print cps, cpu, dn, ct
        }'
}
median_of() { printf '%s\n' "$@" | grep -v '^n/a$' | sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# -n for a run of about SECONDS at the median warm-up rate, rounded, at least MIN.
size_n() { awk -v r="$1" -v s="$2" -v m="$3" 'BEGIN { n = int(r * s / 10000 + 0.5) * 10000; if (n < m || r == "n/a") n = m; print n }'; }

# --- 2. warm-up and sizing ------------------------------------------------------------------
say "bench: warm-up"
for w in $workloads; do
    test=${w%_p*}; pipe=${w#*_p}
    if [ "$pipe" = 1 ]; then wn=20000; else wn=200000; fi
    rates=""
    for t in $rps_targets; do
        set -- $(bench_run "$t" "$test" "$pipe" "$wn")
        rates="$rates $1"
    done
    # shellcheck disable=SC2086
    mr=$(median_of $rates)
    if [ "$pipe" = 1 ]; then
        n=$(size_n "$mr" "$run_seconds" 20000); n=${BENCH_N_P1:-$n}
    else
        n=$(size_n "$mr" "$run_seconds" 200000); n=${BENCH_N_P16:-$n}
    fi
    eval "n_$w=$n"
    say "bench:   $w warm-up rates:$rates -> -n $n"
done
rates=""
for t in $targets; do set -- $(lat_run "$t" 3000); rates="$rates $4"; done
# shellcheck disable=SC2086
n_lat=$(size_n "$(median_of $rates)" "$lat_seconds" 10000); n_lat=${BENCH_N_LAT:-$n_lat}
say "bench:   latency warm-up rates:$rates -> -n $n_lat"

# --- 3. rounds ------------------------------------------------------------------------------
for w in $workloads; do eval "n0_$w=\$n_$w"; done
n0_lat=$n_lat
lock_seconds0=$lock_seconds
pool_seconds0=$pool_seconds
shortened=""
r=1
while [ "$r" -le "$rounds" ]; do
    say "bench: round $r of $rounds"
    t_round=$(date +%s)
    for w in $workloads; do
        test=${w%_p*}; pipe=${w#*_p}
        eval "n=\$n_$w"
        line="  $w:"
        for t in $rps_targets; do
            set -- $(bench_run "$t" "$test" "$pipe" "$n")
            record "$t" "${w}_rps" "$r" "$1"
            [ "$t" = direct ] || record "$t" "${w}_cpu_us" "$r" "$2"
            line="$line $t=$1"
        done
        say "$line"
    done
    line="  get latency p50 (us):"
    for t in $targets; do
        set -- $(lat_run "$t" "$n_lat")
        record "$t" lat_p50_us "$r" "$1"
        record "$t" lat_mean_us "$r" "$2"
        record "$t" lat_p99_us "$r" "$3"
        line="$line $t=$1"
    done
    say "$line"
    line="  lock cycles/s:"
    for run in direct:safe lockproxy:legacy direct:legacy lockproxy:safe; do
        t=${run%:*}; mode=${run#*:}
        set -- $(lock_run "$t" "$mode")
        record "$t" "lock_${mode}_cps" "$r" "$1"
        [ "$t" = direct ] || record "$t" "lock_${mode}_cpu_us" "$r" "$2"
        line="$line $t/$mode=$1"
    done
    say "$line"
    line="  pooled lock cycles/s ($pool_threads threads, $pool_keys $pool_keys_word):"
    for t in direct lockproxy; do
        set -- $(pool_run "$t")
        record "$t" pool_cps "$r" "$1"
        [ "$t" = direct ] || record "$t" pool_cpu_us "$r" "$2"
        record "$t" pool_dels_not_1 "$r" "$3"
        record "$t" pool_contended "$r" "$4"
        line="$line $t=$1"
    done
    say "$line"
    for t in $proxies ${ladmin_pid:+lockproxy+admin}; do
        kill -0 "$(pid_of "$t")" 2>/dev/null || note "$t is no longer running"
    done
    # Keep the whole run inside BENCH_BUDGET seconds on a slow or busy machine: when the
    # rounds left would not fit at this round's pace, shorten them (rates stay comparable).
    now=$(date +%s)
    left=$((rounds - r))
    if [ "$left" -gt 0 ]; then
        need=$(((now - t_round) * left))
        avail=$((budget - (now - t_begin) - 15))
        if [ "$need" -gt "$avail" ]; then
            f=$(awk -v a="$avail" -v n="$need" 'BEGIN { f = a / n; if (f < 0.2) f = 0.2; printf "%.2f", f }')
            note "rounds take $((now - t_round)) s: scaling the remaining runs by $f to stay within ${budget} s"
            for w in $workloads; do
                eval "n_$w=\$(awk -v n=\$n_$w -v f=$f 'BEGIN { n = int(n * f / 1000) * 1000; print (n < 10000 ? 10000 : n) }')"
            done
            n_lat=$(awk -v n="$n_lat" -v f="$f" 'BEGIN { n = int(n * f / 1000) * 1000; print (n < 2000 ? 2000 : n) }')
            lock_seconds=$(awk -v s="$lock_seconds" -v f="$f" 'BEGIN { s *= f; printf "%.1f", (s < 1 ? 1 : s) }')
            pool_seconds=$(awk -v s="$pool_seconds" -v f="$f" 'BEGIN { s *= f; printf "%.1f", (s < 1 ? 1 : s) }')
            shortened="rounds after $r shortened by $f to fit ${budget} s"
        fi
    fi
    r=$((r + 1))
done

# --- report -----------------------------------------------------------------------------------
t_end=$(date +%s)
{
    printf 'date\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf 'cores\t%s\n' "$(nproc)"
    printf 'kernel\t%s\n' "$(uname -r)"
    printf 'rounds\t%s\n' "$rounds"
    printf 'clients\t%s\n' "$clients"
    printf 'keyspace\t%s\n' "$keyspace"
    printf 'idle_conns\t%s\n' "$conns"
    printf 'lock_keys\t%s\n' "$lock_keys"
    printf 'lock_seconds\t%s\n' "$lock_seconds0"
    printf 'pool_threads\t%s\n' "$pool_threads"
    printf 'pool_keys\t%s\n' "$pool_keys"
    printf 'pool_seconds\t%s\n' "$pool_seconds0"
    printf 'haproxy_nbthread\t%s\n' "$hap_threads"
    for w in $workloads; do eval "printf 'n_%s\t%s\n' $w \$n0_$w"; done
    printf 'n_latency\t%s\n' "$n0_lat"
    [ -z "$shortened" ] || printf 'shortened\t%s\n' "$shortened"
    printf 'redis\t%s\n' "$(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/')"
    printf 'nutcracker\t%s\n' "$(nutcracker --version 2>&1 | sed -n 's/.*nutcracker-\([^ ]*\).*/\1/p' | head -n 1)"
    printf 'haproxy\t%s\n' "$(haproxy -v 2>&1 | sed -n 's/^HAProxy version \([^ ]*\).*/\1/p' | head -n 1)"
    printf 'lockproxy\t%s\n' "$(git -C "$top" describe --always --dirty 2>/dev/null || echo unknown)"
    printf 'wall_seconds\t%s\n' "$((t_end - t_begin))"
    [ "$admin" != 1 ] || printf 'admin_scrapes\t%s\n' "$(grep -c . "$work/scrapes.txt" 2>/dev/null || echo 0)"
} >"$meta"
awk -f "$here/report.awk" -v md="$out/results.md" -v json="$out/results.json" "$meta" "$raw"
cat "$out/results.md"
say ""
say "bench: wrote $out/results.md and $out/results.json in $((t_end - t_begin)) s"
