/* Audit event formatting and rate limiting. See audit.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "policy/audit.h"

#define AUDIT_MAX_FIELD 512     /* bytes of a key or name shown before it is cut */

typedef struct out {
    char *p;
    size_t len, cap;
    int overflow;
} out;

static void put(out *o, const char *s, size_t n) {
    if (o->len + n >= o->cap) { o->overflow = 1; return; }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void puts_(out *o, const char *s) { put(o, s, strlen(s)); }

/* Length of the valid UTF-8 sequence at p (1..4), or 0 when the bytes are not one. */
static size_t utf8_len(const unsigned char *p, size_t n) {
    size_t need;
    if (p[0] < 0x80) return 1;
    if (p[0] >= 0xc2 && p[0] <= 0xdf) need = 2;
    else if (p[0] >= 0xe0 && p[0] <= 0xef) need = 3;
    else if (p[0] >= 0xf0 && p[0] <= 0xf4) need = 4;
    else return 0;
    if (n < need) return 0;
    for (size_t i = 1; i < need; i++)
        if ((p[i] & 0xc0) != 0x80) return 0;
    if (need == 3 && p[0] == 0xe0 && p[1] < 0xa0) return 0;      /* overlong */
    if (need == 3 && p[0] == 0xed && p[1] >= 0xa0) return 0;     /* surrogates */
    if (need == 4 && p[0] == 0xf0 && p[1] < 0x90) return 0;
    if (need == 4 && p[0] == 0xf4 && p[1] >= 0x90) return 0;
    return need;
}

/* A JSON string of arbitrary bytes: control bytes and bytes that are not UTF-8 become
 * \u00XX (the byte's value), so every line parses. */
static void put_str(out *o, const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    size_t shown = n > AUDIT_MAX_FIELD ? AUDIT_MAX_FIELD : n;
    put(o, "\"", 1);
    for (size_t i = 0; i < shown;) {
        unsigned char c = p[i];
        char esc[8];
        if (c == '"' || c == '\\') { esc[0] = '\\'; esc[1] = (char)c; put(o, esc, 2); i++; continue; }
        if (c == '\n') { put(o, "\\n", 2); i++; continue; }
        if (c == '\r') { put(o, "\\r", 2); i++; continue; }
        if (c == '\t') { put(o, "\\t", 2); i++; continue; }
        size_t u = c < 0x20 || c == 0x7f ? 0 : utf8_len(p + i, shown - i);
        if (u == 0) {
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            put(o, esc, 6);
            i++;
            continue;
        }
        put(o, s + i, u);
        i += u;
    }
    if (shown < n) puts_(o, "...(cut)");
    put(o, "\"", 1);
}

static void put_field(out *o, const char *name, const char *s, size_t n) {
    put(o, ",\"", 2);
    puts_(o, name);
    put(o, "\":", 2);
    put_str(o, s ? s : "", s ? n : 0);
}

void audit_token_hash(const void *token, size_t len, char out16[17]) {
    uint64_t h = 1469598103934665603ULL;
    const unsigned char *p = token;
    for (size_t i = 0; i < len; i++) h = (h ^ p[i]) * 1099511628211ULL;
    snprintf(out16, 17, "%016llx", (unsigned long long)h);
}

size_t audit_format(const audit_event *e, int64_t wall_ms, uint64_t suppressed, char *buf, size_t cap) {
    out o = {buf, 0, cap, 0};
    char ts[40], num[48];
    time_t secs = (time_t)(wall_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof(ts) - n, ".%03dZ", (int)(wall_ms % 1000));
    puts_(&o, "{\"ts\":\"");
    puts_(&o, ts);
    put(&o, "\"", 1);
    put_field(&o, "event", e->event, e->event ? strlen(e->event) : 0);
    put_field(&o, "mode", e->mode, e->mode ? strlen(e->mode) : 0);
    put_field(&o, "action", e->action, e->action ? strlen(e->action) : 0);
    put_field(&o, "rule", e->rule, e->rule_len);
    put_field(&o, "key", e->key, e->key_len);
    put_field(&o, "client", e->client, e->client ? strlen(e->client) : 0);
    if (e->client_name) put_field(&o, "client_name", e->client_name, e->client_name_len);
    put_field(&o, "detail", e->detail, e->detail ? strlen(e->detail) : 0);
    if (e->held_ms >= 0) {
        snprintf(num, sizeof(num), ",\"held_ms\":%lld", e->held_ms);
        puts_(&o, num);
    }
    if (e->token) {
        char h[17];
        audit_token_hash(e->token, e->token_len, h);
        puts_(&o, ",\"token_hash\":\"");
        puts_(&o, h);
        put(&o, "\"", 1);
    }
    if (suppressed > 0) {
        snprintf(num, sizeof(num), ",\"suppressed\":%llu", (unsigned long long)suppressed);
        puts_(&o, num);
    }
    put(&o, "}\n", 2);
    return o.overflow ? 0 : o.len;
}

/* ---- rate limiting ---- */

typedef struct slot {
    uint64_t id;             /* hash of the identity; 0: empty */
    int64_t window_start;
    uint64_t suppressed;
} slot;

struct audit_limiter {
    int64_t window;
    slot *slots;
    size_t nslots;           /* a power of two */
};

audit_limiter *audit_limiter_new(int64_t window_ms, size_t max_tracked) {
    audit_limiter *l = calloc(1, sizeof(*l));
    if (l == NULL) return NULL;
    size_t n = 16;
    while (n < max_tracked) n *= 2;
    l->slots = calloc(n, sizeof(*l->slots));
    if (l->slots == NULL) { free(l); return NULL; }
    l->nslots = n;
    l->window = window_ms;
    return l;
}

void audit_limiter_free(audit_limiter *l) {
    if (l == NULL) return;
    free(l->slots);
    free(l);
}

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ULL;
    return (h ^ 0xff) * 1099511628211ULL;
}

/* A direct-mapped table: an identity shares its slot with whichever came last, so memory is
 * fixed; a collision at worst logs an event that could have been suppressed. */
int audit_limiter_check(audit_limiter *l, const audit_event *e, int64_t now_ms, uint64_t *suppressed) {
    *suppressed = 0;
    if (l == NULL) return 1;
    size_t iplen = 0;
    if (e->client) {
        const char *colon = strrchr(e->client, ':');
        iplen = colon ? (size_t)(colon - e->client) : strlen(e->client);
    }
    uint64_t id = 1469598103934665603ULL;
    id = fnv(id, e->event, e->event ? strlen(e->event) : 0);
    id = fnv(id, e->rule, e->rule ? e->rule_len : 0);
    id = fnv(id, e->key, e->key ? e->key_len : 0);
    id = fnv(id, e->client, iplen);
    if (id == 0) id = 1;
    slot *s = &l->slots[id & (l->nslots - 1)];
    if (s->id == id && now_ms - s->window_start < l->window) {
        s->suppressed++;
        return 0;
    }
    if (s->id == id) *suppressed = s->suppressed;
    s->id = id;
    s->window_start = now_ms;
    s->suppressed = 0;
    return 1;
}
