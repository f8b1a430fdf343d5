#!/usr/bin/env bash
# Redis's own test suite, directly and through lockproxy: `make conformance`.
#
#   scripts/conformance.sh [BUILD_DIR] [UNIT...]
#
# The suite (Redis 7.0.15's runtest and tests/, see its ORIGIN file) is read from
# $LP_REDIS_TESTS (default ../shared/redis-tests-7.0.15 beside the repository) and copied
# to a temporary directory first, since it writes there and may be read-only. Each unit of
# its ::all_tests list (or the UNITs given) runs in external-server mode twice: against a
# fresh redis-server, and against a fresh redis-server behind a fresh lockproxy whose policy
# has a lock rule in enforce mode on a prefix the suite never uses ("lock:"). Every test's
# result is read from runtest's output; a per-unit table (direct ok, proxy ok, difference)
# and the totals are printed; the logs stay in BUILD_DIR/conformance/.
#
# Exit status 1 when a test that passes directly does not pass through the proxy (they are
# named). A unit where that happens is run once more both ways before it counts: the machine
# is shared and a few of Redis's tests measure time; a test must fail through the proxy
# twice, and pass directly, to be reported.
#
# Environment: LP_REDIS_TESTS (the suite), LP_CONFORMANCE_JOBS (units run at once, default
# 2), LP_CONFORMANCE_TIMEOUT (seconds one unit may take, default 600).
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
[ $# -gt 0 ] && shift
case "$build" in /*) ;; *) build="$root/$build" ;; esac
suite=${LP_REDIS_TESTS:-$root/../shared/redis-tests-7.0.15}
jobs=${LP_CONFORMANCE_JOBS:-2}
unit_timeout=${LP_CONFORMANCE_TIMEOUT:-600}
out="$build/conformance"
proxy_bin="$build/lockproxy"

die() { printf 'conformance: %s\n' "$*" >&2; exit 2; }
[ -x "$proxy_bin" ] || die "$proxy_bin is missing: build first"
[ -f "$suite/runtest" ] || die "no Redis test suite at $suite (set LP_REDIS_TESTS)"
for b in redis-server redis-cli redis-benchmark redis-check-aof tclsh; do
    command -v "$b" >/dev/null 2>&1 || die "$b is not installed (make deps)"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/lockproxy-conformance.XXXXXX")
cleanup() {
    # Only the processes this script started: their pids are in $work/pids.
    if [ -f "$work/pids" ]; then
        while read -r p; do kill -KILL "$p" 2>/dev/null; done <"$work/pids"
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cp -R "$suite" "$work/suite" || die "cannot copy $suite"
chmod -R u+w "$work/suite"
mkdir -p "$work/suite/src"
for b in redis-server redis-cli redis-benchmark redis-check-aof; do
    ln -s "$(command -v "$b")" "$work/suite/src/$b"
done
rm -rf "$out"
mkdir -p "$out"

if [ $# -gt 0 ]; then
    units=("$@")
else
    mapfile -t units < <(awk '/^set ::all_tests \{/ { on = 1; next } on && /^\}/ { exit } on && NF { print $1 }' \
        "$work/suite/tests/test_helper.tcl")
fi
[ ${#units[@]} -gt 0 ] || die "no units found in the suite's test_helper.tcl"

cat >"$work/policy.conf" <<'EOF'
# The suite never uses keys starting with "lock:": every test must pass as it does directly.
rule lock: enforce ttl=30s
EOF

pings() { [ "$(redis-cli -p "$1" PING 2>/dev/null)" = PONG ]; }
random_port() {
    awk -v seed="$RANDOM$RANDOM$BASHPID" 'BEGIN { srand(seed % 2147483647); print 20000 + int(rand() * 12000) }'
}

# start_redis DIR: a fresh redis-server as the suite's external mode expects; prints its port.
start_redis() {
    local dir=$1 port pid i
    mkdir -p "$dir"
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        port=$(random_port)
        pings "$port" && continue
        redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
            --logfile "$dir/redis.log" --daemonize no --enable-debug-command yes \
            --enable-protected-configs yes --enable-module-command yes >/dev/null 2>&1 &
        pid=$!
        echo "$pid" >>"$work/pids"
        for i in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            if pings "$port"; then echo "$port $pid"; return 0; fi
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    return 1
}

# start_proxy DIR UPSTREAM_PORT: a fresh lockproxy with the lock rule; prints its port.
start_proxy() {
    local dir=$1 up=$2 port pid i
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        port=$(random_port)
        pings "$port" && continue
        "$proxy_bin" --listen "127.0.0.1:$port" --upstream "127.0.0.1:$up" --policy "$work/policy.conf" \
            --log "$dir/audit.log" >"$dir/proxy.log" 2>&1 &
        pid=$!
        echo "$pid" >>"$work/pids"
        for i in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            if pings "$port"; then echo "$port $pid"; return 0; fi
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    return 1
}

# run_one UNIT MODE SLOT TRY: runs one unit one way; leaves MODE.log and MODE.res (one line
# per test: "ok|err|exception<TAB>name") in $out/<unit>/.
run_one() {
    local unit=$1 mode=$2 slot=$3 try=$4
    local name=${unit//\//_} d rport rpid pport ppid port rc
    d="$out/$name/$mode$try"
    mkdir -p "$d"
    if ! read -r rport rpid < <(start_redis "$work/$name-$mode$try"); then
        printf 'exception\tredis-server did not start\n' >"$d/res"
        return
    fi
    port=$rport
    ppid=""
    if [ "$mode" = proxy ]; then
        if ! read -r pport ppid < <(start_proxy "$d" "$rport"); then
            printf 'exception\tlockproxy did not start\n' >"$d/res"
            kill -KILL "$rpid" 2>/dev/null
            return
        fi
        port=$pport
    fi
    # Each slot has a port range of its own for the suite's own listeners, below the kernel's
    # ephemeral ports (32768 and up), as is the range 10000 above it that runtest also checks.
    (cd "$work/suite" && timeout -k 10 "$unit_timeout" ./runtest --host 127.0.0.1 --port "$port" --singledb \
        --single "$unit" --clients 1 --baseport $((17000 + slot * 400)) --portcount 360) \
        >"$d/log" 2>&1
    rc=$?
    [ -n "$ppid" ] && kill -TERM "$ppid" 2>/dev/null
    kill -TERM "$rpid" 2>/dev/null
    for _ in $(seq 50); do
        if ! kill -0 "$rpid" 2>/dev/null && { [ -z "$ppid" ] || ! kill -0 "$ppid" 2>/dev/null; }; then break; fi
        sleep 0.1
    done
    [ -n "$ppid" ] && kill -KILL "$ppid" 2>/dev/null
    kill -KILL "$rpid" 2>/dev/null
    [ -f "$work/$name-$mode$try/redis.log" ] && cp "$work/$name-$mode$try/redis.log" "$d/redis.log"
    rm -rf "$work/$name-$mode$try"
    # Results: "[ok]: NAME (N ms)", "[err]: NAME in FILE", "[exception]: ..."; ANSI colours off.
    sed 's/\x1b\[[0-9;]*m//g' "$d/log" | awk '
        /^\[ok\]: / { s = substr($0, 7); sub(/ \([0-9]+ ms\)$/, "", s); print "ok\t" s; next }
        /^\[err\]: / { s = substr($0, 8); sub(/ in tests\/.*$/, "", s); print "err\t" s; next }
        /^\[exception\]: / { print "exception\t" substr($0, 14); next }' >"$d/res"
    if [ "$rc" -ne 0 ] && ! grep -q '^exception' "$d/res" && ! grep -q 'All tests passed' "$d/log"; then
        [ "$rc" -eq 124 ] && printf 'exception\ttimed out after %ss\n' "$unit_timeout" >>"$d/res"
        grep -q '^err' "$d/res" || printf 'exception\trunttest exited with status %s\n' "$rc" >>"$d/res"
    fi
}

# Tests that pass in DIRECT's results and not in PROXY's (names, one per line).
lost_tests() {
    awk -F'\t' 'FNR == NR { if ($1 == "ok") ok[$2] = 1; next } $1 == "ok" { delete ok[$2] }
        END { for (t in ok) print t }' "$1" "$2" | sort
}

# run_unit UNIT SLOT: both ways, and both ways again when the proxy lost a test.
run_unit() {
    local unit=$1 slot=$2 name=${1//\//_} lost
    run_one "$unit" direct "$slot" 1
    run_one "$unit" proxy "$slot" 1
    lost=$(lost_tests "$out/$name/direct1/res" "$out/$name/proxy1/res")
    if [ -n "$lost" ]; then
        run_one "$unit" direct "$slot" 2
        run_one "$unit" proxy "$slot" 2
    fi
    printf '%s\n' "$unit" >>"$out/done"
}

start=$(date +%s)
printf 'conformance: %d units of %s, %d at a time; logs in %s\n' "${#units[@]}" "$suite" "$jobs" "$out"
# A simple pool: slot i takes every jobs-th unit, so each slot's ports stay its own.
for ((slot = 0; slot < jobs; slot++)); do
    (
        for ((i = slot; i < ${#units[@]}; i += jobs)); do run_unit "${units[$i]}" "$slot"; done
    ) &
    echo $! >>"$work/pids"
done
wait

# The table. A test counts as lost when it passes directly and fails through the proxy in the
# first run, and (when a second run was made) again in the second while passing directly.
total_d=0 total_p=0 units_run=0 failed=0 none=""
printf '\n%-40s %8s %8s %6s\n' unit direct proxy diff
: >"$out/lost"
for unit in "${units[@]}"; do
    name=${unit//\//_}
    d="$out/$name"
    [ -f "$d/direct1/res" ] || continue
    nd=$(grep -c '^ok' "$d/direct1/res")
    np=$(grep -c '^ok' "$d/proxy1/res")
    lost=$(lost_tests "$d/direct1/res" "$d/proxy1/res")
    note=""
    if [ -n "$lost" ] && [ -f "$d/proxy2/res" ]; then
        # Lost twice, passing directly both times.
        lost=$(comm -12 <(printf '%s\n' "$lost") <(lost_tests "$d/direct2/res" "$d/proxy2/res"))
        [ -n "$lost" ] || note=" (differed once; equal when run again)"
    fi
    exc=$(grep '^exception' "$d/direct1/res" "$d/proxy1/res" | head -n 1 | cut -f2-)
    [ -n "$exc" ] && note="$note exception: ${exc:0:60}"
    total_d=$((total_d + nd))
    total_p=$((total_p + np))
    if [ $((nd + np)) -eq 0 ] && [ -z "$exc" ]; then
        # Every test of the unit is external:skip (it starts servers of its own).
        none="$none $unit"
        continue
    fi
    units_run=$((units_run + 1))
    printf '%-40s %8d %8d %6d%s\n' "$unit" "$nd" "$np" $((np - nd)) "$note"
    if [ -n "$lost" ]; then
        failed=1
        printf '%s\n' "$lost" | sed "s|^|$unit: |" >>"$out/lost"
    fi
done
printf '%-40s %8d %8d %6d\n' "total ($units_run units ran tests)" "$total_d" "$total_p" $((total_p - total_d))
[ -n "$none" ] && printf 'no test runs in external mode in %d units:%s\n' "$(wc -w <<<"$none")" "$none" | fold -s -w 100
printf 'time: %d s\n' $(($(date +%s) - start))
if [ "$failed" -ne 0 ]; then
    printf '\nFAIL: tests that pass directly and fail through lockproxy (twice):\n'
    sed 's/^/  /' "$out/lost"
    exit 1
fi
printf 'OK: every test that passes directly passes through lockproxy\n'
exit 0
