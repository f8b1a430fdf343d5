/* The request generator of fuzz_stateful.t.c: random pipelines over the lock keys lock:1..4
 * and the ordinary keys k1..k4, and a small model of what Redis answers to them.
 *
 * Contract: fz_gen() fills a pipeline with 1..30 requests whose bytes are the same for every
 * side. For each request the model says how many top-level replies Redis sends for it (0 or
 * 1: CLIENT REPLY OFF/SKIP, empty inline lines), whether its reply may depend on the lock
 * policy (it names a lock key, or an ordinary key written by a transaction that watched one,
 * or it is the EXEC of a transaction that queued or watched one), and whether it carries
 * TTLs that tick (TTL, PTTL, an EXEC that queued them). Where the model cannot be sure
 * (tracking-loss commands, a protocol error while replies are off) it says so in
 * pipe->unsure and the caller pairs no reply with a request.
 *
 * Everything that could make two Redis servers answer differently is kept out: no random
 * keys, clocks, INFO or client ids; every positive relative TTL of a pipeline is a distinct
 * duration at least 100 s long (so GT/LT never compare two expiries a millisecond apart and
 * nothing expires during a round), and absolute times are now + such a duration.
 *
 * Everything is static: fuzz_stateful.t.c includes this header once. */
#ifndef LP_TEST_FUZZ_GEN_H
#define LP_TEST_FUZZ_GEN_H

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/harness.h"

#define FZ_FN static __attribute__((unused))

#define FZ_SECRET1 "Secr3tPassw0rdXYZ"     /* user fuzzuser */
#define FZ_SECRET2 "An0therSecret"         /* user setname */
#define FZ_MAX_REQ 40

/* ---- random numbers (splitmix64: the same sequence on every platform) ---- */

typedef struct fz_rng { uint64_t s; } fz_rng;

FZ_FN uint64_t fz_next(fz_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

FZ_FN int fz_below(fz_rng *r, int n) { return (int)(fz_next(r) % (uint64_t)n); }
FZ_FN int fz_pct(fz_rng *r, int pct) { return fz_below(r, 100) < pct; }

/* ---- categories, switched off by name in LP_FUZZ_SKIP ---- */

enum {
    FZ_HOSTILE = 1 << 0,       /* hostile numbers as TTLs (INT64 limits, "010", " 10", ...) */
    FZ_TRACKING = 1 << 1,      /* SUBSCRIBE, HELLO, CLIENT REPLY queued inside MULTI, HELLO
                                * while replies are off: accounting changes at EXEC (the model
                                * calls the pipeline unsure) */
    FZ_SETNAME_USER = 1 << 2,  /* HELLO 2 AUTH setname <pw>: a user called "setname" */
    FZ_AUTH = 1 << 3,          /* AUTH fuzzuser, HELLO 3 AUTH fuzzuser <pw> SETNAME x */
    FZ_MULTI = 1 << 4,         /* MULTI/EXEC/DISCARD/WATCH, nested and stray ones */
    FZ_REPLY = 1 << 5,         /* CLIENT REPLY ON/OFF/SKIP outside MULTI */
    FZ_INLINE = 1 << 6,        /* inline commands and empty lines */
    FZ_CLOSE = 1 << 7,         /* half-close, QUIT or a protocol error ends the pipeline */
    FZ_HELLO = 1 << 8,         /* HELLO 2/3 (RESP3 replies) */
    FZ_EVAL = 1 << 9,          /* EVAL of a script naming a key */
    FZ_RESET = 1 << 10,
    FZ_SELECT = 1 << 11,
    FZ_BADOPTS = 1 << 12,      /* SET with two TTL options, EXPIRE with two of NX/XX/GT/LT */
    FZ_BIG = 1 << 13,          /* SET and GET of 256 KiB..8 MiB values (also inside MULTI),
                                * in 30% of the rounds; half of those are written whole
                                * before any read, then read slowly (fz_pipe.slow) */
    FZ_NCAT = 14
};

static const char *const fz_cat_names[FZ_NCAT] = {
    "hostile-numbers", "tracking-loss", "setname-user", "auth", "multi", "client-reply",
    "inline", "close", "hello", "eval", "reset", "select", "bad-options", "big-values"
};

/* The categories left on by a comma-separated list of names; bails out on an unknown one. */
FZ_FN unsigned fz_parse_skip(const char *list)
{
    unsigned on = (1u << FZ_NCAT) - 1;
    while (list != NULL && *list) {
        size_t n = strcspn(list, ", ");
        int found = n == 0;
        for (int i = 0; i < FZ_NCAT && !found; i++)
            if (strlen(fz_cat_names[i]) == n && strncmp(list, fz_cat_names[i], n) == 0) {
                on &= ~(1u << i);
                found = 1;
            }
        if (!found) bail_out("LP_FUZZ_SKIP: unknown category \"%.*s\"", (int)n, list);
        list += n;
        list += strspn(list, ", ");
    }
    return on;
}

/* ---- the pipeline and its model ---- */

typedef struct fz_req {
    size_t off, len;           /* its bytes in pipe->bytes */
    int frames;                /* top-level replies Redis sends for it: 0 or 1 */
    int lock;                  /* bit 1: its reply may depend on the lock policy; bit 2:
                                * even whether it is an error (GETEX validates its expire
                                * only when the key exists) */
    int ticking;               /* its reply holds TTLs: positive integers are masked */
    char name[20];             /* its first word, for messages */
} fz_req;

typedef struct fz_pipe {
    hp_buf bytes;
    fz_req req[FZ_MAX_REQ];
    int n;
    int unsure;                /* the model may be wrong: pair no reply with a request */
    int any_lock, any_ttl;
    int half_close;            /* shutdown(SHUT_WR) after the bytes */
    int slow;                  /* write every byte before reading any, then read slowly
                                * (64 KiB per side per poll tick), as redis-py's Pipeline
                                * and a slow consumer do */
    unsigned used_cats;        /* categories the pipeline drew from */
} fz_pipe;

/* The generator's view of the connection, the model's state. */
typedef struct fz_gen_state {
    unsigned on;               /* categories enabled */
    long long now_ms;          /* wall clock at generation, for absolute times */
    int multi, q_lock, q_ttl, watched_lock;
    unsigned q_keys;           /* keys named by the commands queued in MULTI (fz_keys) */
    unsigned tainted;          /* ordinary keys written by a transaction that watched a lock
                                * key: whether it ran depends on the lock policy */
    int reply;                 /* 0 on, 1 off, 2 skip the next reply */
    int reply_on_in;           /* commands until a scheduled CLIENT REPLY ON, 0 none */
    unsigned char used[200];   /* normal TTL durations taken in this pipeline */
    uint64_t used_hostile;     /* accepted hostile relative TTLs taken (bit per value and unit) */
    unsigned big_set;          /* big1 (bit 0), big2 (bit 1) were SET in this pipeline */
    int slow;                  /* this pipeline is written whole before any read (fz_pipe) */
    unsigned used_cats;        /* categories drawn from outside fz_gen_one() */
} fz_gen_state;

static int fz_iequal(const char *a, const char *b)
{
    return strcasecmp(a, b) == 0;
}

/* Back to a fresh connection's state (RESET): no MULTI, no WATCH, replies on. */
static void fz_reset_state(fz_gen_state *st)
{
    st->multi = st->q_lock = st->q_ttl = st->watched_lock = 0;
    st->q_keys = 0;
    st->reply = 0;
}

/* The keys argv names, a bit per key: lock:1..4 are bits 0..3, k1..k4 bits 4..7. */
static unsigned fz_keys(int argc, const char *const *argv)
{
    unsigned keys = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "lock:", 5) == 0 && a[5] >= '1' && a[5] <= '4' && a[6] == '\0') keys |= 1u << (a[5] - '1');
        if (a[0] == 'k' && a[1] >= '1' && a[1] <= '4' && a[2] == '\0') keys |= 1u << (a[1] - '1' + 4);
    }
    return keys;
}

/* Applies the model to one request (argv as sent; argc 0 for an empty inline line). */
static void fz_model(fz_gen_state *st, fz_pipe *pp, fz_req *rq, int argc, const char *const *argv)
{
    const char *cmd = argc > 0 ? argv[0] : "";
    int lock = 0, ttl = fz_iequal(cmd, "TTL") || fz_iequal(cmd, "PTTL");
    unsigned keys = fz_keys(argc, argv);
    for (int i = 1; i < argc; i++) lock |= strncmp(argv[i], "lock:", 5) == 0;
    lock |= (keys & st->tainted) != 0;
    if (lock && fz_iequal(cmd, "GETEX") && argc >= 4) lock |= 2;
    int client_reply = argc >= 3 && fz_iequal(cmd, "CLIENT") && fz_iequal(argv[1], "REPLY");
    int frames = argc > 0;
    snprintf(rq->name, sizeof rq->name, "%s", argc > 0 ? cmd : "(empty line)");
    rq->lock = lock;
    rq->ticking = ttl;
    pp->any_lock |= lock;
    pp->any_ttl |= ttl;
    if (argc == 0) {
        if (st->reply == 2) st->reply = 0;          /* an empty request ends a SKIP too */
        rq->frames = 0;
        return;
    }
    int was = st->reply;
    if (client_reply && !st->multi) {
        /* ON answers even when replies were off or skipped; OFF and SKIP never answer, and
         * a SKIP while replies are off changes nothing. */
        rq->frames = fz_iequal(argv[2], "ON");
        st->reply = rq->frames ? 0 : fz_iequal(argv[2], "OFF") ? 1 : was == 1 ? 1 : 2;
        return;
    }
    if (st->multi) {
        if (fz_iequal(cmd, "EXEC")) {
            rq->lock = lock | st->q_lock | st->watched_lock;
            rq->ticking = ttl | st->q_ttl;
            pp->any_lock |= rq->lock;
            pp->any_ttl |= rq->ticking;
            if (st->watched_lock) st->tainted |= st->q_keys;
            st->multi = st->q_lock = st->q_ttl = st->watched_lock = 0;
            st->q_keys = 0;
        } else if (fz_iequal(cmd, "DISCARD")) {
            st->multi = st->q_lock = st->q_ttl = st->watched_lock = 0;
            st->q_keys = 0;
        } else if (fz_iequal(cmd, "RESET")) {
            fz_reset_state(st);
        } else if (!fz_iequal(cmd, "MULTI") && !fz_iequal(cmd, "WATCH")) {
            st->q_lock |= lock;
            st->q_ttl |= ttl;
            st->q_keys |= keys;
            if (client_reply || fz_iequal(cmd, "HELLO") || fz_iequal(cmd, "SUBSCRIBE")) pp->unsure = 1;
        }
    } else if (fz_iequal(cmd, "MULTI")) {
        st->multi = 1;
    } else if (fz_iequal(cmd, "WATCH")) {
        st->watched_lock |= lock;
    } else if (fz_iequal(cmd, "RESET")) {
        fz_reset_state(st);
    } else if (fz_iequal(cmd, "SUBSCRIBE")) {
        pp->unsure = 1;
    }
    /* Replies off or skipped: no reply, but RESET turns them on before answering an OFF. */
    if (was != 0 && !(was == 1 && fz_iequal(cmd, "RESET"))) frames = 0;
    if (was == 2) st->reply = 0;
    rq->frames = frames;
}

/* Appends one request, as multibulk or (inline) as an inline command with Redis's quoting. */
static void fz_emit(fz_gen_state *st, fz_pipe *pp, int inl, int argc, const char *const *argv)
{
    if (pp->n >= FZ_MAX_REQ) return;
    fz_req *rq = &pp->req[pp->n++];
    rq->off = pp->bytes.len;
    if (!inl) {
        hp_buf_cmdargv(&pp->bytes, argc, (const char **)argv, NULL);
    } else {
        for (int i = 0; i < argc; i++) {
            const unsigned char *a = (const unsigned char *)argv[i];
            int plain = *a != '\0';
            for (const unsigned char *c = a; *c && plain; c++)
                plain = *c > ' ' && *c < 127 && *c != '"' && *c != '\'' && *c != '\\';
            if (i) hp_buf_puts(&pp->bytes, " ");
            if (plain) { hp_buf_puts(&pp->bytes, argv[i]); continue; }
            hp_buf_puts(&pp->bytes, "\"");
            for (const unsigned char *c = a; *c; c++) {
                if (*c == '"' || *c == '\\') hp_buf_printf(&pp->bytes, "\\%c", *c);
                else if (*c >= ' ' && *c < 127) hp_buf_append(&pp->bytes, c, 1);
                else hp_buf_printf(&pp->bytes, "\\x%02x", *c);
            }
            hp_buf_puts(&pp->bytes, "\"");
        }
        hp_buf_puts(&pp->bytes, "\r\n");
    }
    rq->len = pp->bytes.len - rq->off;
    fz_model(st, pp, rq, argc, argv);
}

/* ---- arguments ---- */

static const char *fz_key(fz_rng *r)
{
    static const char *const keys[] = { "lock:1", "lock:2", "lock:3", "lock:4", "k1", "k2", "k3", "k4" };
    return keys[fz_below(r, 8)];
}

/* A value of 8 MiB (always when largest, else half the time), 256 KiB or 2 MiB (built once,
 * kept until exit). */
static const char *fz_big_value(fz_rng *r, int largest)
{
    static char *vals[3];
    static const size_t sizes[3] = { 256 << 10, 2 << 20, 8 << 20 };
    int i = largest || fz_pct(r, 50) ? 2 : fz_below(r, 2);
    if (vals[i] == NULL) {
        vals[i] = malloc(sizes[i] + 1);
        if (vals[i] == NULL) bail_out("out of memory");
        for (size_t j = 0; j < sizes[i]; j++) vals[i][j] = (char)('a' + j % 26);
        vals[i][sizes[i]] = '\0';
    }
    return vals[i];
}

static const char *fz_value(fz_rng *r)
{
    static const char *const vals[] = { "v1", "v2", "tok-a", "1" };
    return vals[fz_below(r, 4)];
}

/* Command names and options in random case now and then: Redis does not care. */
static const char *fz_case(fz_rng *r, const char *word, char *buf, size_t cap)
{
    if (!fz_pct(r, 10)) return word;
    snprintf(buf, cap, "%s", word);
    for (char *c = buf; *c; c++) *c = (char)(fz_pct(r, 50) ? tolower((unsigned char)*c) : *c);
    return buf;
}

static const char *const fz_hostile[] = {
    "-9223372036854775808", "9223372036854775807", "9223372036854776", "-9223372036854775",
    "010", "-0", " 10", "\t10", "+5", "", "1e3", "100000000000000", "9223372036854775808",
    "-9223372036854775809", "0x10", "10 ", "1.5"
};
#define FZ_NHOSTILE (sizeof fz_hostile / sizeof fz_hostile[0])

/* Whether Redis takes s as a positive TTL: a plain decimal (no sign, space or leading zero)
 * that fits in milliseconds. */
static int fz_takes_positive(const char *s, int ms)
{
    if (*s < '1' || *s > '9' || strspn(s, "0123456789") != strlen(s)) return 0;
    errno = 0;
    long long v = strtoll(s, NULL, 10);
    return errno == 0 && (ms || v <= LLONG_MAX / 1000);
}

/* A TTL argument into buf: seconds or milliseconds (ms), relative or absolute (at).
 * Normal values are distinct durations of 100..20000 s; hostile ones (when enabled) are
 * taken as they are, but one that Redis takes as a positive relative TTL only once per
 * pipeline (two expiries a millisecond apart would make GT/LT answer by timing). */
static const char *fz_ttl(fz_rng *r, fz_gen_state *st, int ms, int at, char *buf, size_t cap)
{
    if ((st->on & FZ_HOSTILE) && fz_pct(r, 25)) {
        unsigned i = (unsigned)fz_below(r, (int)FZ_NHOSTILE);
        int accepted_positive = !at && fz_takes_positive(fz_hostile[i], ms);
        uint64_t bit = 1ULL << (i * 2 + (unsigned)ms);
        if (!accepted_positive || !(st->used_hostile & bit)) {
            st->used_hostile |= accepted_positive ? bit : 0;
            st->used_cats |= FZ_HOSTILE;
            return fz_hostile[i];
        }
    }
    int pick = fz_below(r, 10);
    if (pick == 0) return "0";
    if (pick == 1) return "-1";
    int k = fz_below(r, 200);
    while (st->used[k]) k = (k + 1) % 200;
    st->used[k] = 1;
    long long secs = 100LL * (k + 1);
    if (pick == 2 && at) secs = -secs;             /* in the past: deletes the key */
    long long v = ms ? secs * 1000 : secs;
    if (at) v += ms ? st->now_ms : st->now_ms / 1000;
    snprintf(buf, cap, "%lld", v);
    return buf;
}

/* ---- commands ---- */

#define FZ_ARGS 12

typedef struct fz_cmd {
    const char *argv[FZ_ARGS];
    int argc;
    char num[3][32];           /* storage for numbers */
    char cased[FZ_ARGS][24];   /* storage for re-cased words */
    int big;                   /* an argument is too long for an inline command */
} fz_cmd;

static void fz_add(fz_rng *r, fz_cmd *c, const char *word, int recase)
{
    if (c->argc >= FZ_ARGS) return;
    c->argv[c->argc] = recase ? fz_case(r, word, c->cased[c->argc], sizeof c->cased[0]) : word;
    c->argc++;
}

/* SET k v with random NX/XX, EX/PX/EXAT/PXAT/KEEPTTL (with bad-options sometimes two: a
 * syntax error, or the last one wins when it is the same word twice) and GET, the option
 * groups in random order. */
static void fz_gen_set(fz_rng *r, fz_gen_state *st, fz_cmd *c)
{
    static const char *const ttls[] = { "EX", "PX", "EXAT", "PXAT", "KEEPTTL" };
    const char *group[5][2] = {{0}};
    int groups = 0;
    fz_add(r, c, "SET", 1);
    fz_add(r, c, fz_key(r), 0);
    fz_add(r, c, fz_value(r), 0);
    int cond = fz_below(r, 8);
    if (cond < 3 || cond == 4) group[groups++][0] = "NX";
    if (cond == 3 || cond == 4) group[groups++][0] = "XX";
    int two = (st->on & FZ_BADOPTS) && fz_pct(r, 8);
    st->used_cats |= two ? FZ_BADOPTS : 0;
    for (int n = two ? 2 : fz_pct(r, 60), i = 0; i < n; i++) {
        int t = fz_below(r, 5);
        group[groups][0] = ttls[t];
        if (t < 4) group[groups][1] = fz_ttl(r, st, t == 1 || t == 3, t >= 2, c->num[i], sizeof c->num[0]);
        groups++;
    }
    if (fz_pct(r, 20)) group[groups++][0] = "GET";
    for (int i = groups - 1; i > 0; i--) {
        int j = fz_below(r, i + 1);
        for (int w = 0; w < 2; w++) {
            const char *t = group[i][w];
            group[i][w] = group[j][w];
            group[j][w] = t;
        }
    }
    for (int i = 0; i < groups; i++) {
        fz_add(r, c, group[i][0], 1);
        if (group[i][1] != NULL) fz_add(r, c, group[i][1], 0);
    }
}

static void fz_gen_expire(fz_rng *r, fz_gen_state *st, fz_cmd *c)
{
    static const char *const cmds[] = { "EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT" };
    static const char *const flags[] = { "NX", "XX", "GT", "LT" };
    int k = fz_below(r, 4);
    fz_add(r, c, cmds[k], 1);
    fz_add(r, c, fz_key(r), 0);
    fz_add(r, c, fz_ttl(r, st, k & 1, k >= 2, c->num[0], sizeof c->num[0]), 0);
    if (fz_pct(r, 35)) fz_add(r, c, flags[fz_below(r, 4)], 1);
    if ((st->on & FZ_BADOPTS) && fz_pct(r, 5)) {
        fz_add(r, c, flags[fz_below(r, 4)], 1);
        st->used_cats |= FZ_BADOPTS;
    }
}

static void fz_gen_getex(fz_rng *r, fz_gen_state *st, fz_cmd *c)
{
    static const char *const opts[] = { "EX", "PX", "EXAT", "PXAT", "PERSIST" };
    fz_add(r, c, "GETEX", 1);
    fz_add(r, c, fz_key(r), 0);
    int t = fz_below(r, 6);
    if (t < 5) fz_add(r, c, opts[t], 1);
    if (t < 4) fz_add(r, c, fz_ttl(r, st, t == 1 || t == 3, t >= 2, c->num[0], sizeof c->num[0]), 0);
}

static void fz_gen_eval(fz_rng *r, fz_cmd *c)
{
    static const char *const scripts[] = {
        "return redis.call('GET', KEYS[1])",
        "return redis.call('SET', KEYS[1], ARGV[1])",
        "return redis.call('DEL', KEYS[1])",
        "return redis.call('EXISTS', KEYS[1])",
        "return redis.call('SETNX', KEYS[1], ARGV[1])",
    };
    fz_add(r, c, "EVAL", 1);
    fz_add(r, c, scripts[fz_below(r, 5)], 0);
    fz_add(r, c, "1", 0);
    fz_add(r, c, fz_key(r), 0);
    fz_add(r, c, fz_value(r), 0);
}

enum {
    K_SETNX, K_SET, K_EXPIRE, K_PERSIST, K_GETEX, K_DEL, K_GETSET, K_EVAL, K_TX, K_WATCH, K_RESET,
    K_HELLO, K_AUTH, K_SETNAME_USER, K_SELECT, K_CLIENT_SETNAME, K_CLIENT_REPLY, K_PING, K_GET,
    K_TTL, K_TRACKING, K_EMPTY_LINE, K_BIG, K_KINDS
};

/* One random command into c; may emit a MULTI first (tracking-loss commands go inside one). */
static void fz_gen_one(fz_rng *r, fz_gen_state *st, fz_pipe *pp, fz_cmd *c)
{
    /* Weights per kind; a kind whose category is off is drawn again. */
    static const struct { int weight; unsigned cat; } kinds[K_KINDS] = {
        [K_SETNX] = { 8, 0 }, [K_SET] = { 10, 0 }, [K_EXPIRE] = { 12, 0 }, [K_PERSIST] = { 4, 0 },
        [K_GETEX] = { 4, 0 }, [K_DEL] = { 6, 0 }, [K_GETSET] = { 3, 0 }, [K_EVAL] = { 3, FZ_EVAL },
        [K_TX] = { 8, FZ_MULTI }, [K_WATCH] = { 2, FZ_MULTI }, [K_RESET] = { 1, FZ_RESET },
        [K_HELLO] = { 2, FZ_HELLO }, [K_AUTH] = { 1, FZ_AUTH }, [K_SETNAME_USER] = { 1, FZ_SETNAME_USER },
        [K_SELECT] = { 2, FZ_SELECT }, [K_CLIENT_SETNAME] = { 2, 0 }, [K_CLIENT_REPLY] = { 1, FZ_REPLY },
        [K_PING] = { 3, 0 }, [K_GET] = { 4, 0 }, [K_TTL] = { 4, 0 }, [K_TRACKING] = { 2, FZ_TRACKING },
        [K_EMPTY_LINE] = { 1, FZ_INLINE }, [K_BIG] = { 8, FZ_BIG },
    };
    int total = 0, kind = 0;
    for (int i = 0; i < K_KINDS; i++) total += kinds[i].weight;
    int loses_tracking;        /* HELLO or CLIENT REPLY queued in MULTI, HELLO with replies off */
    do {
        int x = fz_below(r, total);
        for (kind = 0; x >= kinds[kind].weight; kind++) x -= kinds[kind].weight;
        int hello = kind == K_HELLO || kind == K_AUTH || kind == K_SETNAME_USER;
        loses_tracking = (st->multi && (hello || kind == K_CLIENT_REPLY)) || (st->reply != 0 && hello);
    } while ((kinds[kind].cat != 0 && !(st->on & kinds[kind].cat)) || (loses_tracking && !(st->on & FZ_TRACKING)));
    pp->used_cats |= kinds[kind].cat | (loses_tracking ? FZ_TRACKING : 0);
    switch (kind) {
    case K_SETNX: fz_add(r, c, "SETNX", 1); fz_add(r, c, fz_key(r), 0); fz_add(r, c, fz_value(r), 0); break;
    case K_SET: fz_gen_set(r, st, c); break;
    case K_EXPIRE: fz_gen_expire(r, st, c); break;
    case K_PERSIST: fz_add(r, c, "PERSIST", 1); fz_add(r, c, fz_key(r), 0); break;
    case K_GETEX: fz_gen_getex(r, st, c); break;
    case K_DEL:
        fz_add(r, c, fz_pct(r, 50) ? "DEL" : "UNLINK", 1);
        for (int n = 1 + fz_below(r, 3), i = 0; i < n; i++) fz_add(r, c, fz_key(r), 0);
        break;
    case K_GETSET: fz_add(r, c, "GETSET", 1); fz_add(r, c, fz_key(r), 0); fz_add(r, c, fz_value(r), 0); break;
    case K_EVAL: fz_gen_eval(r, c); break;
    case K_TX: {
        static const char *const tx[] = { "MULTI", "EXEC", "DISCARD" };
        /* Mostly well-formed: EXEC/DISCARD follow a MULTI, but stray and nested ones too. */
        int t = st->multi ? 1 + fz_below(r, 2) : 0;
        if (fz_pct(r, 15)) t = fz_below(r, 3);
        fz_add(r, c, tx[t], 1);
        break;
    }
    case K_WATCH: fz_add(r, c, "WATCH", 1); fz_add(r, c, fz_key(r), 0); if (fz_pct(r, 30)) fz_add(r, c, fz_key(r), 0); break;
    case K_RESET: fz_add(r, c, "RESET", 1); break;
    case K_HELLO:
        fz_add(r, c, "HELLO", 1);
        fz_add(r, c, fz_pct(r, 5) ? "4" : fz_pct(r, 50) ? "2" : "3", 0);
        break;
    case K_AUTH:
        if (fz_pct(r, 50)) {
            fz_add(r, c, "AUTH", 1);
        } else {
            fz_add(r, c, "HELLO", 1); fz_add(r, c, "3", 0); fz_add(r, c, "AUTH", 1);
        }
        fz_add(r, c, "fuzzuser", 0);
        fz_add(r, c, FZ_SECRET1, 0);
        if (c->argc == 5) { fz_add(r, c, "SETNAME", 1); fz_add(r, c, "x", 0); }
        break;
    case K_SETNAME_USER:
        fz_add(r, c, "HELLO", 1); fz_add(r, c, "2", 0); fz_add(r, c, "AUTH", 1);
        fz_add(r, c, "setname", 0); fz_add(r, c, FZ_SECRET2, 0);
        break;
    case K_SELECT: fz_add(r, c, "SELECT", 1); fz_add(r, c, fz_pct(r, 50) ? "0" : "1", 0); break;
    case K_CLIENT_SETNAME:
        fz_add(r, c, "CLIENT", 1); fz_add(r, c, "SETNAME", 1);
        fz_add(r, c, fz_pct(r, 10) ? "a b" : fz_pct(r, 50) ? "x" : "worker", 0);
        break;
    case K_CLIENT_REPLY: {
        static const char *const modes[] = { "OFF", "SKIP", "ON" };
        int m = fz_below(r, 3);
        fz_add(r, c, "CLIENT", 1); fz_add(r, c, "REPLY", 1); fz_add(r, c, modes[m], 1);
        if (m == 0 && fz_pct(r, 70)) st->reply_on_in = 1 + fz_below(r, 4);
        break;
    }
    case K_PING: fz_add(r, c, "PING", 1); if (fz_pct(r, 30)) fz_add(r, c, "hello world", 0); break;
    case K_GET: fz_add(r, c, "GET", 1); fz_add(r, c, fz_key(r), 0); break;
    case K_TTL: fz_add(r, c, fz_pct(r, 50) ? "TTL" : "PTTL", 1); fz_add(r, c, fz_key(r), 0); break;
    case K_TRACKING: {
        if (!st->multi) {
            const char *m[] = { "MULTI" };
            fz_emit(st, pp, 0, 1, m);
        }
        int t = fz_below(r, 4);
        if (t == 0) { fz_add(r, c, "SUBSCRIBE", 1); fz_add(r, c, "chan", 0); }
        else if (t == 1) { fz_add(r, c, "HELLO", 1); fz_add(r, c, fz_pct(r, 50) ? "2" : "3", 0); }
        else { fz_add(r, c, "CLIENT", 1); fz_add(r, c, "REPLY", 1); fz_add(r, c, t == 2 ? "OFF" : "SKIP", 1); }
        break;
    }
    case K_BIG: {
        /* Mostly a GET of a value SET earlier in the pipeline (the servers are flushed
         * between rounds): large replies ahead of lock commands and large requests after. */
        int k = fz_below(r, 2), get = ((st->big_set >> k) & 1) && fz_pct(r, 65);
        c->big = 1;
        fz_add(r, c, get ? "GET" : "SET", 1);
        fz_add(r, c, k ? "big2" : "big1", 0);
        if (!get) {
            fz_add(r, c, fz_big_value(r, st->slow), 0);
            st->big_set |= 1u << k;
        }
        break;
    }
    default: break;            /* K_EMPTY_LINE: argc 0 */
    }
}

/* Fills pp (reset first) with a random pipeline for the categories in on. */
FZ_FN void fz_gen(fz_rng *r, unsigned on, long long now_ms, fz_pipe *pp)
{
    fz_gen_state st;
    memset(&st, 0, sizeof st);
    /* Large values in three rounds of ten (they rule out a close ending, see below). */
    st.on = (on & FZ_BIG) && !fz_pct(r, 30) ? on & ~(unsigned)FZ_BIG : on;
    /* Half of those are written whole before any read, with 8 MiB values: large replies
     * ahead of a lock command and large requests behind it, the pattern that once stalled. */
    st.slow = (st.on & FZ_BIG) && fz_pct(r, 50);
    st.now_ms = now_ms;
    hp_buf_reset(&pp->bytes);
    hp_buf_append(&pp->bytes, "", 0);
    pp->n = pp->unsure = pp->any_lock = pp->any_ttl = pp->half_close = pp->slow = 0;
    pp->used_cats = 0;
    for (int n = 1 + fz_below(r, 30), i = 0; i < n && pp->n < FZ_MAX_REQ - 2; i++) {
        fz_cmd c;
        memset(&c, 0, sizeof c);
        /* A scheduled CLIENT REPLY ON waits while it would be queued in MULTI. */
        int reply_on = st.reply_on_in > 0 && --st.reply_on_in == 0;
        if (reply_on && st.multi && !(on & FZ_TRACKING)) {
            st.reply_on_in = 1;
            reply_on = 0;
        }
        if (reply_on) {
            fz_add(r, &c, "CLIENT", 0); fz_add(r, &c, "REPLY", 0); fz_add(r, &c, "ON", 0);
        } else {
            fz_gen_one(r, &st, pp, &c);
        }
        int inl = (on & FZ_INLINE) && !c.big && fz_pct(r, 10);
        if (inl) pp->used_cats |= FZ_INLINE;
        fz_emit(&st, pp, inl || c.argc == 0, c.argc, c.argv);
    }
    pp->used_cats |= st.used_cats;
    pp->slow = st.slow && (pp->used_cats & FZ_BIG);
    /* No close ending with large values: Redis drops the output it has not written when it
     * closes (a protocol error) or reads EOF, so the reference would lose, by timing, large
     * replies the proxy delivers (tests/faults/half_close.t covers those cases). */
    if (pp->used_cats & FZ_BIG) return;
    if (!(on & FZ_CLOSE) || !fz_pct(r, 15)) return;
    pp->used_cats |= FZ_CLOSE;
    int end = fz_below(r, 5);
    if (end < 2) {
        pp->half_close = 1;
    } else if (end == 2) {
        const char *q[] = { "QUIT" };
        fz_emit(&st, pp, 0, 1, q);
    } else {
        /* A protocol error: Redis answers it (unless replies are off) and closes. */
        fz_req *rq = &pp->req[pp->n++];
        rq->off = pp->bytes.len;
        hp_buf_puts(&pp->bytes, end == 3 ? "SET k1 \"abc\r\n" : "*2\r\n$3\r\nGET\r\n$x\r\n");
        rq->len = pp->bytes.len - rq->off;
        rq->frames = st.reply == 0;
        rq->lock = rq->ticking = 0;
        snprintf(rq->name, sizeof rq->name, "(protocol error)");
        pp->unsure |= st.reply != 0;
    }
}

#endif
