# Turns the raw numbers of tests/bench/run.sh into the markdown table and the JSON file.
#
#   awk -f report.awk -v md=results.md -v json=results.json meta.tsv raw.tsv
#
# meta.tsv: KEY<TAB>VALUE lines. raw.tsv: TARGET<TAB>METRIC<TAB>ROUND<TAB>VALUE lines, VALUE a
# number or n/a. Medians are over rounds; ratios are ratios of medians. Targets are printed
# with "met"/"missed", never asserted. Plain POSIX awk (mawk): no asort, no gensub.

BEGIN { FS = "\t"; ntargets = split("direct lockproxy twemproxy haproxy", tg, " ") }

FNR == NR { meta[$1] = $2; mkeys[++nmeta] = $1; next }

{
    k = $1 SUBSEP $2
    if (!(k in seen)) { seen[k] = 1; order[++nkeys] = k }
    if (!($2 in mseen)) { mseen[$2] = 1; morder[++nmetrics] = $2 }
    runs[k] = (k in runs) ? runs[k] " " $4 : $4
}

function isnum(v) { return v ~ /^-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?$/ }

# Median of the numeric values recorded for TARGET and METRIC; "" when there are none.
function med(t, m,    k, n, i, j, a, b, c, x) {
    k = t SUBSEP m
    if (!(k in runs)) return ""
    n = split(runs[k], a, " ")
    c = 0
    for (i = 1; i <= n; i++) if (isnum(a[i])) b[++c] = a[i] + 0
    if (c == 0) return ""
    for (i = 2; i <= c; i++) {        # insertion sort
        x = b[i]
        for (j = i - 1; j >= 1 && b[j] > x; j--) b[j + 1] = b[j]
        b[j + 1] = x
    }
    return (c % 2) ? b[(c + 1) / 2] : (b[c / 2] + b[c / 2 + 1]) / 2
}

# Sum of the numeric values recorded for TARGET and METRIC over all rounds; "" when none.
function total(t, m,    k, n, i, a, c, sum) {
    k = t SUBSEP m
    if (!(k in runs)) return ""
    n = split(runs[k], a, " ")
    c = 0; sum = 0
    for (i = 1; i <= n; i++) if (isnum(a[i])) { c++; sum += a[i] }
    return c ? sum : ""
}

function ratio(a, b) { return (a == "" || b == "" || b + 0 <= 0) ? "" : a / b }
function f(v, d) { return v == "" ? "n/a" : sprintf("%." d "f", v) }
function fx(v) { return v == "" ? "n/a" : sprintf("%.2f×", v) }
function jnum(v) { return v == "" ? "null" : sprintf("%.6g", v) }
function jstr(s) { gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s); return "\"" s "\"" }

# One markdown row: LABEL then the median of METRIC for each target, D decimals.
function row(label, m, d,    i, s) {
    s = "| " label
    for (i = 1; i <= ntargets; i++) s = s " | " f(med(tg[i], m), d)
    print s " |" > md
}

# One target check: markdown row and JSON entry. CMP is ">=" or "<=".
function check(name, v, cmp, goal, shown, unit,    met, s) {
    if (v == "") met = "n/a"
    else if (cmp == ">=") met = (v + 0 >= goal + 0) ? "met" : "missed"
    else met = (v + 0 <= goal + 0) ? "met" : "missed"
    print "| " name " | " shown " | " cmp " " goal unit " | " met " |" > md
    s = "    {\"check\": " jstr(name) ", \"value\": " jnum(v) ", \"target\": " jstr(cmp " " goal unit) \
        ", \"met\": " (met == "n/a" ? "null" : (met == "met" ? "true" : "false")) "}"
    checks[++nchecks] = s
}

END {
    split("set_p1 get_p1 set_p16 get_p16", wl, " ")
    wname["set_p1"] = "SET P1"; wname["get_p1"] = "GET P1"
    wname["set_p16"] = "SET P16"; wname["get_p16"] = "GET P16"

    print "# lockproxy benchmark" > md
    print "" > md
    print meta["date"] ", " meta["cores"] " cores, Linux " meta["kernel"] "; redis-server " meta["redis"] \
        ", nutcracker " meta["nutcracker"] ", haproxy " meta["haproxy"] " (nbthread " meta["haproxy_nbthread"] \
        "), lockproxy " meta["lockproxy"] " (rule `lock:` enforce ttl=30s)." > md
    print "Medians over " meta["rounds"] " rounds; in each round every workload runs on direct, lockproxy, " \
        "twemproxy, haproxy in turn. redis-benchmark: " meta["clients"] " clients, random keys over " \
        meta["keyspace"] ", -n " meta["n_set_p1"] "/" meta["n_get_p1"] " (P1), " meta["n_set_p16"] "/" \
        meta["n_get_p16"] " (P16); single-client GET latency: " meta["n_latency"] " requests timed one by one" \
        (("shortened" in meta) ? " (" meta["shortened"] ")" : "") ". Wall time " meta["wall_seconds"] " s." > md
    print "" > md
    print "| | direct | lockproxy | twemproxy | haproxy |" > md
    print "|---|--:|--:|--:|--:|" > md
    for (i = 1; i <= 4; i++) row(wname[wl[i]] ", " meta["clients"] " clients (req/s)", wl[i] "_rps", 0)
    row("GET p50, 1 client (µs)", "lat_p50_us", 1)
    s = "| GET p50 added over direct (µs) | —"
    for (i = 2; i <= ntargets; i++) {
        pa = med(tg[i], "lat_p50_us"); pb = med("direct", "lat_p50_us")
        added[tg[i]] = (pa == "" || pb == "") ? "" : pa - pb
        s = s " | " f(added[tg[i]], 1)
    }
    print s " |" > md
    row("GET mean, 1 client (µs)", "lat_mean_us", 1)
    row("GET p99, 1 client (µs)", "lat_p99_us", 1)
    for (i = 1; i <= 4; i++) row("proxy CPU per request, " wname[wl[i]] " (µs)", wl[i] "_cpu_us", 2)
    row("RSS per idle connection, " meta["idle_conns"] " held (KiB)", "rss_kib_per_conn", 2)
    print "" > md

    if (("lockproxy+admin" SUBSEP "set_p1_rps") in runs) {
        print "Admin listener: a second lockproxy with `admin` on, `GET /metrics` scraped once a second " \
            "while it runs (" meta["admin_scrapes"] " scrapes in all), measured right after the plain " \
            "lockproxy in each round (medians; CPU includes the HTTP thread):" > md
        print "" > md
        print "| | lockproxy | lockproxy + admin scraped every second | admin / plain |" > md
        print "|---|--:|--:|--:|" > md
        for (i = 1; i <= 4; i++) {
            pa = med("lockproxy", wl[i] "_rps"); pb = med("lockproxy+admin", wl[i] "_rps")
            print "| " wname[wl[i]] ", " meta["clients"] " clients (req/s) | " f(pa, 0) " | " f(pb, 0) " | " fx(ratio(pb, pa)) " |" > md
        }
        for (i = 1; i <= 4; i++) {
            pa = med("lockproxy", wl[i] "_cpu_us"); pb = med("lockproxy+admin", wl[i] "_cpu_us")
            print "| proxy CPU per request, " wname[wl[i]] " (µs) | " f(pa, 2) " | " f(pb, 2) " | " fx(ratio(pb, pa)) " |" > md
        }
        print "" > md
    }

    print "Lock workload: " meta["clients"] " clients on " meta["lock_keys"] " lock keys for " meta["lock_seconds"] \
        " s per run; completed acquire/release cycles per second (medians):" > md
    print "" > md
    print "| pattern | direct to Redis | through lockproxy (enforce) | lockproxy CPU per cycle (µs) |" > md
    print "|---|--:|--:|--:|" > md
    print "| legacy: SETNX; EXPIRE 10; DEL | " f(med("direct", "lock_legacy_cps"), 0) " (unsafe) | " \
        f(med("lockproxy", "lock_legacy_cps"), 0) " (rewritten) | " f(med("lockproxy", "lock_legacy_cpu_us"), 1) " |" > md
    print "| hand-written safe: SET NX PX 10000; EVALSHA compare-and-delete | " \
        f(med("direct", "lock_safe_cps"), 0) " | " f(med("lockproxy", "lock_safe_cps"), 0) " | " \
        f(med("lockproxy", "lock_safe_cpu_us"), 1) " |" > md
    print "" > md

    pool_keys = meta["pool_keys"] " " (meta["pool_keys"] == 1 ? "key" : "keys")
    pool_label = "pooled lock cycles/s (" meta["pool_threads"] " threads, " pool_keys ")"
    pool_ratio = ratio(med("lockproxy", "pool_cps"), med("direct", "pool_cps"))
    print "Pooled lock workload: " meta["pool_threads"] " threads share a pool of " meta["pool_threads"] \
        " connections (as with redis-py's ConnectionPool), " pool_keys ", " meta["pool_seconds"] \
        " s per run, on direct then lockproxy in each round. A cycle is `SET lock:pool:<k> <uuid> NX EX 10` " \
        "on a random free connection, then `DEL lock:pool:<k>` on another one, counted when DEL answers 1 " \
        "(through lockproxy, owner=auto must accept the release from the other connection); " \
        "a missed SET is retried at once. Completed cycles per second (medians):" > md
    print "" > md
    print "| | direct to Redis | through lockproxy (enforce) | lockproxy / direct | lockproxy CPU per cycle (µs) | DELs not 1, all rounds (direct / lockproxy) |" > md
    print "|---|--:|--:|--:|--:|--:|" > md
    print "| " pool_label " | " f(med("direct", "pool_cps"), 0) " | " f(med("lockproxy", "pool_cps"), 0) " | " \
        fx(pool_ratio) " | " f(med("lockproxy", "pool_cpu_us"), 1) " | " f(total("direct", "pool_dels_not_1"), 0) \
        " / " f(total("lockproxy", "pool_dels_not_1"), 0) " |" > md
    print "" > md

    print "Ratios, lockproxy / other (ratios of medians; req/s: higher is better; CPU, latency, memory: lower is better):" > md
    print "" > md
    print "| | vs direct | vs haproxy | vs twemproxy |" > md
    print "|---|--:|--:|--:|" > md
    split("direct haproxy twemproxy", vs, " ")
    for (i = 1; i <= 4; i++) {
        s = "| " wname[wl[i]] " req/s"
        for (j = 1; j <= 3; j++) {
            r = ratio(med("lockproxy", wl[i] "_rps"), med(vs[j], wl[i] "_rps"))
            rat[vs[j], wl[i] "_rps"] = r
            s = s " | " fx(r)
        }
        print s " |" > md
    }
    for (i = 1; i <= 4; i++) {
        s = "| CPU per request, " wname[wl[i]] " | n/a"
        for (j = 2; j <= 3; j++) {
            r = ratio(med("lockproxy", wl[i] "_cpu_us"), med(vs[j], wl[i] "_cpu_us"))
            rat[vs[j], wl[i] "_cpu_us"] = r
            s = s " | " fx(r)
        }
        print s " |" > md
    }
    s = "| GET p50, 1 client"
    for (j = 1; j <= 3; j++) {
        r = ratio(med("lockproxy", "lat_p50_us"), med(vs[j], "lat_p50_us"))
        rat[vs[j], "lat_p50_us"] = r
        s = s " | " fx(r)
    }
    print s " |" > md
    s = "| RSS per idle connection | n/a"
    for (j = 2; j <= 3; j++) {
        r = ratio(med("lockproxy", "rss_kib_per_conn"), med(vs[j], "rss_kib_per_conn"))
        rat[vs[j], "rss_kib_per_conn"] = r
        s = s " | " fx(r)
    }
    print s " |" > md
    lock_ratio = ratio(med("lockproxy", "lock_legacy_cps"), med("direct", "lock_safe_cps"))
    print "" > md
    print "Lock workload, enforce (legacy through lockproxy) / hand-written safe direct: " fx(lock_ratio) > md
    print "" > md
    print "Pooled lock cycles/s (" meta["pool_threads"] " threads, " pool_keys "), lockproxy / direct: " fx(pool_ratio) > md
    print "" > md

    print "Targets (same-run ratios, printed, not asserted):" > md
    print "" > md
    print "| check | measured | target | |" > md
    print "|---|--:|--:|---|" > md
    check("SET P16 req/s, lockproxy / haproxy", rat["haproxy", "set_p16_rps"], ">=", "1.0", fx(rat["haproxy", "set_p16_rps"]), "×")
    check("GET P16 req/s, lockproxy / haproxy", rat["haproxy", "get_p16_rps"], ">=", "1.0", fx(rat["haproxy", "get_p16_rps"]), "×")
    check("SET P16 req/s, lockproxy / direct", rat["direct", "set_p16_rps"], ">=", "0.75", fx(rat["direct", "set_p16_rps"]), "×")
    check("GET P16 req/s, lockproxy / direct", rat["direct", "get_p16_rps"], ">=", "0.75", fx(rat["direct", "get_p16_rps"]), "×")
    for (i = 1; i <= 4; i++)
        check("CPU per request " wname[wl[i]] ", lockproxy / twemproxy", rat["twemproxy", wl[i] "_cpu_us"], "<=", "1.0",
              fx(rat["twemproxy", wl[i] "_cpu_us"]), "×")
    lat_ratio = ratio(added["lockproxy"], added["twemproxy"])
    if (added["twemproxy"] != "" && added["twemproxy"] <= 0) lat_ratio = ""
    check("GET p50 added over direct, lockproxy / twemproxy", lat_ratio, "<=", "0.5",
          f(added["lockproxy"], 1) " / " f(added["twemproxy"], 1) " µs = " fx(lat_ratio), "×")
    check("lock cycles/s, enforce / hand-written safe", lock_ratio, ">=", "0.9", fx(lock_ratio), "×")
    v = med("lockproxy", "rss_kib_per_conn")
    check("lockproxy RSS per idle connection at " meta["idle_conns"], v, "<=", "8", f(v, 2) " KiB", " KiB")

    # JSON: meta, every run, the medians, the ratios and the target checks.
    print "{" > json
    print "  \"meta\": {" > json
    for (i = 1; i <= nmeta; i++)
        print "    " jstr(mkeys[i]) ": " (isnum(meta[mkeys[i]]) ? meta[mkeys[i]] : jstr(meta[mkeys[i]])) \
            (i < nmeta ? "," : "") > json
    print "  }," > json
    njt = split("direct lockproxy twemproxy haproxy", jt, " ")
    if (("lockproxy+admin" SUBSEP "set_p1_rps") in runs) jt[++njt] = "lockproxy+admin"
    for (pass = 1; pass <= 2; pass++) {
        print "  \"" (pass == 1 ? "runs" : "median") "\": {" > json
        for (i = 1; i <= njt; i++) {
            print "    " jstr(jt[i]) ": {" > json
            c = 0
            for (j = 1; j <= nmetrics; j++) if ((jt[i] SUBSEP morder[j]) in runs) last = j
            for (j = 1; j <= nmetrics; j++) {
                k = jt[i] SUBSEP morder[j]
                if (!(k in runs)) continue
                if (pass == 1) {
                    n = split(runs[k], a, " ")
                    s = "["
                    for (x = 1; x <= n; x++) s = s (x > 1 ? ", " : "") (isnum(a[x]) ? a[x] : "null")
                    s = s "]"
                } else s = jnum(med(jt[i], morder[j]))
                print "      " jstr(morder[j]) ": " s (j < last ? "," : "") > json
            }
            print "    }" (i < njt ? "," : "") > json
        }
        print "  }," > json
    }
    print "  \"ratios\": {" > json
    for (j = 1; j <= 3; j++) {
        print "    " jstr("lockproxy_vs_" vs[j]) ": {" > json
        s = ""
        for (i = 1; i <= 4; i++) {
            s = s (s == "" ? "" : ",\n") "      " jstr(wl[i] "_rps") ": " jnum(rat[vs[j], wl[i] "_rps"])
            if (j > 1) s = s ",\n      " jstr(wl[i] "_cpu_us") ": " jnum(rat[vs[j], wl[i] "_cpu_us"])
        }
        s = s ",\n      \"lat_p50_us\": " jnum(rat[vs[j], "lat_p50_us"])
        if (j > 1) s = s ",\n      \"rss_kib_per_conn\": " jnum(rat[vs[j], "rss_kib_per_conn"])
        print s > json
        print "    }," > json
    }
    print "    \"p50_added_us\": {\"lockproxy\": " jnum(added["lockproxy"]) ", \"twemproxy\": " jnum(added["twemproxy"]) \
        ", \"haproxy\": " jnum(added["haproxy"]) "}," > json
    print "    \"p50_added_lockproxy_vs_twemproxy\": " jnum(lat_ratio) "," > json
    print "    \"lock_enforce_vs_handwritten\": " jnum(lock_ratio) "," > json
    print "    \"pool_lockproxy_vs_direct\": " jnum(pool_ratio) > json
    print "  }," > json
    print "  \"targets\": [" > json
    for (i = 1; i <= nchecks; i++) print checks[i] (i < nchecks ? "," : "") > json
    print "  ]" > json
    print "}" > json
}
