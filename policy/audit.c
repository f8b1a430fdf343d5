/* Audit event formatting and rate limiting. See audit.h. */
#include "policy/audit.h"
#include "common/hash.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- output buffer ---- */

typedef struct outbuf {
    char *p;
    size_t len, cap;
    int overflow;               /* sticky: something did not fit */
} outbuf;

static void put(outbuf *o, const void *s, size_t n)
{
    if (o->overflow || n > o->cap - o->len) {
        o->overflow = 1;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void put_cstr(outbuf *o, const char *s)
{
    put(o, s, strlen(s));
}

/* ---- JSON strings from arbitrary bytes ---- */

/* Length (1..4) of the well-formed UTF-8 sequence at p, which has n > 0 bytes, or 0 when the
 * bytes there are not one (stray continuation, overlong form, surrogate, beyond U+10FFFF,
 * or cut short). */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    size_t need;
    unsigned char lo = 0x80, hi = 0xbf;     /* the allowed range of the second byte */
    if (p[0] < 0x80) return 1;
    if (p[0] >= 0xc2 && p[0] <= 0xdf) need = 2;
    else if (p[0] >= 0xe0 && p[0] <= 0xef) need = 3;
    else if (p[0] >= 0xf0 && p[0] <= 0xf4) need = 4;
    else return 0;
    if (p[0] == 0xe0) lo = 0xa0;            /* overlong */
    if (p[0] == 0xed) hi = 0x9f;            /* UTF-16 surrogates */
    if (p[0] == 0xf0) lo = 0x90;            /* overlong */
    if (p[0] == 0xf4) hi = 0x8f;            /* beyond U+10FFFF */
    if (n < need || p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < need; i++)
        if ((p[i] & 0xc0) != 0x80) return 0;
    return need;
}

/* Writes s[0..n) as a JSON string (with its quotes). At most show bytes of escaped text go
 * between the quotes; when the input does not fit, it is cut before the first character that
 * would overflow and "…" follows. Every byte that is a control, 0x7f, or not part of a valid
 * UTF-8 sequence becomes \u00XX, so the result is valid JSON and valid UTF-8. */
static void put_json_str(outbuf *o, const void *s, size_t n, size_t show)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = s ? s : (const unsigned char *)"";
    size_t used = 0;
    if (s == NULL) n = 0;
    put(o, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        char esc[6];
        const char *piece = esc;
        size_t plen, consumed = 1;
        switch (c) {
        case '"':  piece = "\\\""; plen = 2; break;
        case '\\': piece = "\\\\"; plen = 2; break;
        case '\n': piece = "\\n"; plen = 2; break;
        case '\r': piece = "\\r"; plen = 2; break;
        case '\t': piece = "\\t"; plen = 2; break;
        case '\b': piece = "\\b"; plen = 2; break;
        case '\f': piece = "\\f"; plen = 2; break;
        default:
            consumed = c < 0x20 || c == 0x7f ? 0 : utf8_seq(p + i, n - i);
            if (consumed == 0) {
                esc[0] = '\\';
                esc[1] = 'u';
                esc[2] = '0';
                esc[3] = '0';
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 15];
                plen = 6;
                consumed = 1;
            } else {
                piece = (const char *)p + i;
                plen = consumed;
            }
        }
        if (used + plen > show) {
            put(o, "\xe2\x80\xa6", 3);
            break;
        }
        put(o, piece, plen);
        used += plen;
        i += consumed;
    }
    put(o, "\"", 1);
}

/* Writes ,"name":"value" with value escaped and cut at show bytes. */
static void put_field(outbuf *o, const char *name, const void *s, size_t n, size_t show)
{
    put(o, ",\"", 2);
    put_cstr(o, name);
    put(o, "\":", 2);
    put_json_str(o, s, n, show);
}

static void put_uint_field(outbuf *o, const char *name, unsigned long long v)
{
    char num[64];
    int n = snprintf(num, sizeof(num), ",\"%s\":%llu", name, v);
    if (n < 0 || (size_t)n >= sizeof(num)) {
        o->overflow = 1;
        return;
    }
    put(o, num, (size_t)n);
}

/* The longest line audit_format can produce (NUL included): each string field at its cap plus
 * the 3 bytes of "…", quotes and punctuation, numbers at 20 digits. */
#define FIELD_MAX(namelen, show) (6 + (namelen) + (show) + 3)
#define AUDIT_WORST_LINE                                                                      \
    (7 + 24 + 1                                                  /* {"ts":"...." */         \
     + FIELD_MAX(5, AUDIT_SHOW_WORD) + FIELD_MAX(4, AUDIT_SHOW_WORD)                          \
     + FIELD_MAX(6, AUDIT_SHOW_WORD) + FIELD_MAX(4, AUDIT_SHOW_NAME)                          \
     + FIELD_MAX(3, AUDIT_SHOW_KEY) + FIELD_MAX(6, AUDIT_SHOW_NAME)                           \
     + FIELD_MAX(11, AUDIT_SHOW_NAME) + FIELD_MAX(6, AUDIT_SHOW_KEY)                          \
     + 11 + 20                                                   /* ,"held_ms":N */         \
     + 15 + 16 + 1                                               /* ,"token_hash":"H" */    \
     + 14 + 20                                                   /* ,"suppressed":N */      \
     + 3)                                                        /* }\n NUL */
_Static_assert(AUDIT_WORST_LINE <= AUDIT_LINE_MAX, "AUDIT_LINE_MAX too small for the field caps");

/* Writes v (>= 0) as exactly n decimal digits at p. */
static void put_digits(char *p, int v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
}

size_t audit_format_time(int64_t wall_ms, char out[25])
{
    const int64_t max_ms = 253402300799999LL;       /* 9999-12-31T23:59:59.999Z */
    if (wall_ms < 0) wall_ms = 0;
    if (wall_ms > max_ms) wall_ms = max_ms;
    time_t secs = (time_t)(wall_ms / 1000);
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    gmtime_r(&secs, &tm);
    memcpy(out, "0000-00-00T00:00:00.000Z", 25);
    put_digits(out, tm.tm_year + 1900, 4);
    put_digits(out + 5, tm.tm_mon + 1, 2);
    put_digits(out + 8, tm.tm_mday, 2);
    put_digits(out + 11, tm.tm_hour, 2);
    put_digits(out + 14, tm.tm_min, 2);
    put_digits(out + 17, tm.tm_sec, 2);
    put_digits(out + 20, (int)(wall_ms % 1000), 3);
    return 24;
}

void audit_token_hash(const void *token, size_t len, char out[17])
{
    static const char hex[] = "0123456789abcdef";
    uint64_t h = lp_fnv1a(LP_FNV1A_OFFSET, token, token ? len : 0);
    for (int i = 15; i >= 0; i--) {
        out[i] = hex[h & 15];
        h >>= 4;
    }
    out[16] = '\0';
}

static size_t cstrlen(const char *s)
{
    return s ? strlen(s) : 0;
}

size_t audit_format(const audit_event *e, int64_t wall_ms, uint64_t suppressed, char *buf, size_t cap)
{
    outbuf o = {buf, 0, cap, 0};
    char ts[25];

    audit_format_time(wall_ms, ts);
    put_cstr(&o, "{\"ts\":\"");
    put_cstr(&o, ts);
    put(&o, "\"", 1);
    put_field(&o, "event", e->event, cstrlen(e->event), AUDIT_SHOW_WORD);
    put_field(&o, "mode", e->mode, cstrlen(e->mode), AUDIT_SHOW_WORD);
    put_field(&o, "action", e->action, cstrlen(e->action), AUDIT_SHOW_WORD);
    put_field(&o, "rule", e->rule, e->rule_len, AUDIT_SHOW_NAME);
    put_field(&o, "key", e->key, e->key_len, AUDIT_SHOW_KEY);
    put_field(&o, "client", e->client, cstrlen(e->client), AUDIT_SHOW_NAME);
    if (e->client_name) put_field(&o, "client_name", e->client_name, e->client_name_len, AUDIT_SHOW_NAME);
    put_field(&o, "detail", e->detail, cstrlen(e->detail), AUDIT_SHOW_KEY);
    if (e->held_ms >= 0) put_uint_field(&o, "held_ms", (unsigned long long)e->held_ms);
    if (e->token) {
        char h[17];
        audit_token_hash(e->token, e->token_len, h);
        put_cstr(&o, ",\"token_hash\":\"");
        put(&o, h, 16);
        put(&o, "\"", 1);
    }
    if (suppressed > 0) put_uint_field(&o, "suppressed", (unsigned long long)suppressed);
    put(&o, "}\n", 2);
    if (o.overflow) return 0;
    if (o.len < cap) buf[o.len] = '\0';
    return o.len;
}

/* ---- rate limiting ----
 * A chained hash table of identities with a fixed bucket array (a power of two at least
 * max_tracked), and a doubly-linked FIFO of the same identities in the order their current
 * window opened: the head is the one to forget first, and flush walks from the head while
 * windows are over. An identity keeps up to its field cap (+1 byte, so that the formatter
 * still sees the cut) of each component, the full lengths, and a second 64-bit hash of the
 * full components: two identities compare equal when all of these do. */

typedef struct ident {
    uint64_t hash, fp;
    struct ident *hnext;
    struct ident *older, *newer;
    int64_t window_start;
    uint64_t suppressed;
    size_t full_len[4];         /* event, rule, key, client IP */
    size_t kept_len[4];
    char *part[4];              /* into data[], NUL-terminated */
    char mode[16], action[16];  /* of the last logged occurrence, for the summary */
    char data[];
} ident;

enum { ID_EVENT, ID_RULE, ID_KEY, ID_IP };

struct audit_limiter {
    int64_t window;
    size_t max, count;
    ident **buckets;
    size_t nbuckets;
    ident *oldest, *newest;
    uint64_t lost;              /* suppressed counts of identities forgotten for room */
    uint64_t seed;
};

audit_limiter *audit_limiter_new(int64_t window_ms, size_t max_tracked)
{
    static uint64_t counter;
    audit_limiter *l = calloc(1, sizeof(*l));
    if (l == NULL) return NULL;
    l->window = window_ms;
    l->max = max_tracked ? max_tracked : 1;
    l->nbuckets = 16;
    while (l->nbuckets < l->max && l->nbuckets < ((size_t)1 << 30)) l->nbuckets *= 2;
    l->buckets = calloc(l->nbuckets, sizeof(*l->buckets));
    if (l->buckets == NULL) {
        free(l);
        return NULL;
    }
    l->seed = lp_fnv1a(LP_FNV1A_OFFSET ^ (uint64_t)(uintptr_t)l, &counter, sizeof(counter));
    counter++;
    return l;
}

void audit_limiter_free(audit_limiter *l)
{
    if (l == NULL) return;
    ident *s = l->oldest;
    while (s) {
        ident *next = s->newer;
        free(s);
        s = next;
    }
    free(l->buckets);
    free(l);
}

size_t audit_limiter_count(const audit_limiter *l)
{
    return l ? l->count : 0;
}

/* Points ptr/len at the four identity components of e: event, rule, key, and the client
 * without its ":port" (up to the last ':', so "[::1]:5000" gives "[::1]"). */
static void components(const audit_event *e, const char *ptr[4], size_t len[4])
{
    ptr[ID_EVENT] = e->event ? e->event : "";
    len[ID_EVENT] = cstrlen(e->event);
    ptr[ID_RULE] = e->rule ? e->rule : "";
    len[ID_RULE] = e->rule ? e->rule_len : 0;
    ptr[ID_KEY] = e->key ? e->key : "";
    len[ID_KEY] = e->key ? e->key_len : 0;
    ptr[ID_IP] = e->client ? e->client : "";
    len[ID_IP] = cstrlen(e->client);
    const char *colon = e->client ? strrchr(e->client, ':') : NULL;
    if (colon) len[ID_IP] = (size_t)(colon - e->client);
}

/* Hash of the four components with their lengths (so that no two splits of the same bytes
 * collide by construction); with two different seeds it gives the bucket hash and the
 * fingerprint. */
static uint64_t hash_parts(uint64_t seed, const char *ptr[4], const size_t len[4])
{
    uint64_t h = LP_FNV1A_OFFSET ^ seed;
    for (int i = 0; i < 4; i++) {
        h = lp_fnv1a(h, ptr[i], len[i]);
        h = lp_fnv1a(h, &len[i], sizeof(len[i]));
    }
    return h ^ (h >> 29);
}

/* How many bytes of a component an identity keeps: its display cap plus one, so that a
 * summary of a longer one still shows the cut. */
static size_t keep_cap(int part)
{
    return (part == ID_KEY ? AUDIT_SHOW_KEY : part == ID_EVENT ? AUDIT_SHOW_WORD : AUDIT_SHOW_NAME) + 1;
}

/* Returns the tracked identity equal to the given components (same hash, fingerprint, full
 * lengths and kept bytes), or NULL. */
static ident *find_ident(const audit_limiter *l, uint64_t h, uint64_t fp, const char *ptr[4],
                         const size_t len[4])
{
    for (ident *s = l->buckets[h & (l->nbuckets - 1)]; s; s = s->hnext) {
        if (s->hash != h || s->fp != fp) continue;
        int same = 1;
        for (int i = 0; i < 4 && same; i++)
            same = s->full_len[i] == len[i] && memcmp(s->part[i], ptr[i], s->kept_len[i]) == 0;
        if (same) return s;
    }
    return NULL;
}

static void fifo_unlink(audit_limiter *l, ident *s)
{
    if (s->older) s->older->newer = s->newer;
    else l->oldest = s->newer;
    if (s->newer) s->newer->older = s->older;
    else l->newest = s->older;
    s->older = s->newer = NULL;
}

static void fifo_append(audit_limiter *l, ident *s)
{
    s->older = l->newest;
    s->newer = NULL;
    if (l->newest) l->newest->newer = s;
    else l->oldest = s;
    l->newest = s;
}

/* Takes s out of both structures and frees it. */
static void forget(audit_limiter *l, ident *s)
{
    ident **ps = &l->buckets[s->hash & (l->nbuckets - 1)];
    while (*ps != s) ps = &(*ps)->hnext;
    *ps = s->hnext;
    fifo_unlink(l, s);
    l->count--;
    free(s);
}

/* Copies the C string src (NULL: "") into dst, cut to cap - 1 bytes. */
static void copy_word(char *dst, size_t cap, const char *src)
{
    size_t n = cstrlen(src);
    if (n >= cap) n = cap - 1;
    if (n) memcpy(dst, src, n);
    dst[n] = '\0';
}

/* A window that opened at start is still open at now. A clock that went back closes it, so
 * that nothing is suppressed for longer than one window. */
static int window_open(int64_t window, int64_t start, int64_t now)
{
    return now >= start && (uint64_t)now - (uint64_t)start < (uint64_t)(window > 0 ? window : 0);
}

static int in_window(const audit_limiter *l, int64_t start, int64_t now)
{
    return window_open(l->window, start, now);
}

int audit_limiter_check(audit_limiter *l, const audit_event *e, int64_t now_ms, uint64_t *suppressed)
{
    const char *ptr[4];
    size_t len[4];
    *suppressed = 0;
    if (l == NULL) return 1;
    components(e, ptr, len);
    uint64_t h = hash_parts(l->seed, ptr, len);
    uint64_t fp = hash_parts(~l->seed, ptr, len);
    ident *s = find_ident(l, h, fp, ptr, len);
    if (s != NULL) {
        if (in_window(l, s->window_start, now_ms)) {
            s->suppressed++;
            return 0;
        }
        *suppressed = s->suppressed;
        s->suppressed = 0;
        s->window_start = now_ms;
        copy_word(s->mode, sizeof(s->mode), e->mode);
        copy_word(s->action, sizeof(s->action), e->action);
        fifo_unlink(l, s);
        fifo_append(l, s);
        return 1;
    }

    if (l->count >= l->max) {
        l->lost += l->oldest->suppressed;
        forget(l, l->oldest);
    }
    size_t kept[4], total = 0;
    for (int i = 0; i < 4; i++) {
        kept[i] = len[i] < keep_cap(i) ? len[i] : keep_cap(i);
        total += kept[i] + 1;
    }
    s = malloc(sizeof(*s) + total);
    if (s == NULL) return 1;
    memset(s, 0, sizeof(*s));
    char *d = s->data;
    for (int i = 0; i < 4; i++) {
        s->full_len[i] = len[i];
        s->kept_len[i] = kept[i];
        s->part[i] = d;
        if (kept[i]) memcpy(d, ptr[i], kept[i]);
        d[kept[i]] = '\0';
        d += kept[i] + 1;
    }
    s->hash = h;
    s->fp = fp;
    s->window_start = now_ms;
    copy_word(s->mode, sizeof(s->mode), e->mode);
    copy_word(s->action, sizeof(s->action), e->action);
    ident **b = &l->buckets[h & (l->nbuckets - 1)];
    s->hnext = *b;
    *b = s;
    fifo_append(l, s);
    l->count++;
    return 1;
}

/* Forgets identities from the oldest on, while their window is over at now_ms (all of them
 * with all), reporting their counts; then the count of those forgotten for room. */
static size_t flush(audit_limiter *l, int64_t now_ms, int all, audit_emit_fn emit, void *ud)
{
    size_t n = 0;
    if (l == NULL) return 0;
    while (l->oldest && (all || !in_window(l, l->oldest->window_start, now_ms))) {
        ident *s = l->oldest;
        if (s->suppressed > 0 && emit) {
            audit_event e;
            memset(&e, 0, sizeof(e));
            e.event = s->part[ID_EVENT];
            e.mode = s->mode;
            e.action = s->action;
            e.rule = s->part[ID_RULE];
            e.rule_len = s->kept_len[ID_RULE];
            e.key = s->part[ID_KEY];
            e.key_len = s->kept_len[ID_KEY];
            e.client = s->part[ID_IP];
            e.detail = "rate-limited";
            e.held_ms = -1;
            emit(ud, &e, s->suppressed);
            n++;
        }
        forget(l, s);
    }
    if (l->lost > 0) {
        if (emit) {
            audit_event e;
            memset(&e, 0, sizeof(e));
            e.event = "audit_suppressed";
            e.detail = "rate-limited events of identities forgotten for lack of room";
            e.held_ms = -1;
            emit(ud, &e, l->lost);
            n++;
        }
        l->lost = 0;
    }
    return n;
}

size_t audit_limiter_flush(audit_limiter *l, int64_t now_ms, audit_emit_fn emit, void *ud)
{
    return flush(l, now_ms, 0, emit, ud);
}

size_t audit_limiter_flush_all(audit_limiter *l, audit_emit_fn emit, void *ud)
{
    return flush(l, 0, 1, emit, ud);
}

/* ---- once per window ----
 * The same shape as the limiter: a chained hash table with a fixed bucket array, and a FIFO
 * of the keys in the order their current window opened (the oldest first: the one to forget
 * when full, and where expired keys are found). */

typedef struct once_key {
    uint64_t hash;
    struct once_key *hnext;
    struct once_key *older, *newer;
    int64_t window_start;
    size_t len;
    unsigned char key[];
} once_key;

struct audit_once {
    int64_t window;
    size_t max, count;
    once_key **buckets;
    size_t nbuckets;
    once_key *oldest, *newest;
    uint64_t seed;
};

audit_once *audit_once_new(size_t max_entries, int64_t window_ms)
{
    static uint64_t counter;
    audit_once *o = calloc(1, sizeof(*o));
    if (o == NULL) return NULL;
    o->window = window_ms;
    o->max = max_entries ? max_entries : 1;
    o->nbuckets = 16;
    while (o->nbuckets < o->max && o->nbuckets < ((size_t)1 << 30)) o->nbuckets *= 2;
    o->buckets = calloc(o->nbuckets, sizeof(*o->buckets));
    if (o->buckets == NULL) {
        free(o);
        return NULL;
    }
    o->seed = lp_fnv1a(LP_FNV1A_OFFSET ^ (uint64_t)(uintptr_t)o, &counter, sizeof(counter));
    counter++;
    return o;
}

void audit_once_free(audit_once *o)
{
    if (o == NULL) return;
    once_key *k = o->oldest;
    while (k) {
        once_key *next = k->newer;
        free(k);
        k = next;
    }
    free(o->buckets);
    free(o);
}

size_t audit_once_count(const audit_once *o)
{
    return o ? o->count : 0;
}

static void once_unlink(audit_once *o, once_key *k)
{
    if (k->older) k->older->newer = k->newer;
    else o->oldest = k->newer;
    if (k->newer) k->newer->older = k->older;
    else o->newest = k->older;
    k->older = k->newer = NULL;
}

static void once_append(audit_once *o, once_key *k)
{
    k->older = o->newest;
    k->newer = NULL;
    if (o->newest) o->newest->newer = k;
    else o->oldest = k;
    o->newest = k;
}

static void once_forget(audit_once *o, once_key *k)
{
    once_key **pk = &o->buckets[k->hash & (o->nbuckets - 1)];
    while (*pk != k) pk = &(*pk)->hnext;
    *pk = k->hnext;
    once_unlink(o, k);
    o->count--;
    free(k);
}

int audit_once_check(audit_once *o, const void *key, size_t len, int64_t now_ms)
{
    if (o == NULL) return 1;
    if (key == NULL) len = 0;
    /* Keys whose window is over are of no more use: forget them from the oldest on. */
    while (o->oldest && !window_open(o->window, o->oldest->window_start, now_ms)) once_forget(o, o->oldest);

    uint64_t h = lp_fnv1a(LP_FNV1A_OFFSET ^ o->seed, key, len);
    h ^= h >> 29;
    for (once_key *k = o->buckets[h & (o->nbuckets - 1)]; k; k = k->hnext) {
        if (k->hash != h || k->len != len || (len && memcmp(k->key, key, len) != 0)) continue;
        if (window_open(o->window, k->window_start, now_ms)) return 0;
        /* Not reached after the sweep above, unless the FIFO order and the clock disagree
         * (a clock that went back): a new window. */
        k->window_start = now_ms;
        once_unlink(o, k);
        once_append(o, k);
        return 1;
    }

    if (o->count >= o->max) once_forget(o, o->oldest);
    once_key *k = malloc(sizeof(*k) + (len ? len : 1));
    if (k == NULL) return 1;
    memset(k, 0, sizeof(*k));
    k->hash = h;
    k->len = len;
    if (len) memcpy(k->key, key, len);
    k->window_start = now_ms;
    once_key **b = &o->buckets[h & (o->nbuckets - 1)];
    k->hnext = *b;
    *b = k;
    once_append(o, k);
    o->count++;
    return 1;
}
