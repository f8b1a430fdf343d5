/* The proxy's own upstream connection: see upconn.h. */
#include "proxy/upconn.h"
#include "resp/encode.h"

#include <stdlib.h>
#include <string.h>

typedef struct upcmd {
    lp_upconn_cb cb;
    void *ud;
    struct upcmd *next;
} upcmd;

typedef struct upwrite {
    uv_write_t req;
    uv_buf_t buf;
    char data[];
} upwrite;

struct lp_upconn {
    union { uv_tcp_t tcp; uv_pipe_t pipe; uv_stream_t stream; uv_handle_t handle; } h;
    uv_timer_t timer;
    uv_connect_t connect_req;
    redisReader *reader;
    int timeout_ms;
    int open_handles;
    unsigned connected : 1;
    unsigned dead : 1;
    unsigned released : 1;       /* the owner called lp_upconn_close() */
    upcmd *head, *tail;          /* waiting for a reply, oldest first */
    size_t npending;
    char *unsent;                /* bytes queued before the connection was up */
    size_t unsent_len;
    lp_upconn_cb on_message;     /* pub/sub messages, when set */
    void *message_ud;
};

static int is_message(const redisReply *r) {
    return r->type == REDIS_REPLY_ARRAY && r->elements >= 3 && r->element[0]->type == REDIS_REPLY_STRING &&
           r->element[0]->len == 7 && memcmp(r->element[0]->str, "message", 7) == 0;
}

static void handle_closed(uv_handle_t *h) {
    lp_upconn *c = h->data;
    if (c->open_handles > 0) c->open_handles--;
    if (c->open_handles > 0 || !c->released) return;
    redisReaderFree(c->reader);
    free(c->unsent);
    free(c);
}

/* Ends the connection: every waiting command learns there will be no reply. */
static void fail_all(lp_upconn *c) {
    if (c->dead) return;
    c->dead = 1;
    uv_timer_stop(&c->timer);
    if (!uv_is_closing(&c->h.handle)) uv_close(&c->h.handle, handle_closed);
    if (!uv_is_closing((uv_handle_t *)&c->timer)) uv_close((uv_handle_t *)&c->timer, handle_closed);
    while (c->head != NULL) {
        upcmd *k = c->head;
        c->head = k->next;
        c->npending--;
        k->cb(c, NULL, k->ud);
        free(k);
    }
    c->tail = NULL;
}

static void timeout_cb(uv_timer_t *t) { fail_all(t->data); }

static void arm_timer(lp_upconn *c) {
    if (c->dead) return;
    if (c->head != NULL || !c->connected) uv_timer_start(&c->timer, timeout_cb, (uint64_t)c->timeout_ms, 0);
    else uv_timer_stop(&c->timer);
}

static void write_cb(uv_write_t *req, int status) {
    upwrite *w = (upwrite *)req;
    lp_upconn *c = req->data;
    free(w);
    if (status < 0) fail_all(c);
}

static int write_bytes(lp_upconn *c, const char *p, size_t len) {
    upwrite *w = malloc(sizeof(*w) + len);
    if (w == NULL) return -1;
    memcpy(w->data, p, len);
    w->buf = uv_buf_init(w->data, (unsigned)len);
    w->req.data = c;
    if (uv_write(&w->req, &c->h.stream, &w->buf, 1, write_cb) < 0) {
        free(w);
        return -1;
    }
    return 0;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    static char slab[16384];   /* the reader copies what it is fed */
    (void)h;
    (void)suggested;
    buf->base = slab;
    buf->len = sizeof(slab);
}

static void read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
    lp_upconn *c = st->data;
    if (nread == 0) return;
    if (nread < 0 || redisReaderFeed(c->reader, buf->base, (size_t)nread) != REDIS_OK) {
        fail_all(c);
        return;
    }
    for (;;) {
        void *rep = NULL;
        if (redisReaderGetReply(c->reader, &rep) != REDIS_OK) { fail_all(c); return; }
        if (rep == NULL) break;
        if (c->on_message != NULL && is_message(rep)) {
            c->on_message(c, rep, c->message_ud);
            freeReplyObject(rep);
            if (c->dead) return;
            continue;
        }
        upcmd *k = c->head;
        if (k == NULL) {   /* a reply nobody asked for: this is not the Redis we think */
            freeReplyObject(rep);
            fail_all(c);
            return;
        }
        c->head = k->next;
        if (c->head == NULL) c->tail = NULL;
        c->npending--;
        k->cb(c, rep, k->ud);
        free(k);
        freeReplyObject(rep);
        if (c->dead) return;
    }
    arm_timer(c);
}

static void connect_cb(uv_connect_t *req, int status) {
    lp_upconn *c = req->data;
    if (c->dead) return;
    if (status < 0) { fail_all(c); return; }
    c->connected = 1;
    if (c->h.handle.type == UV_TCP) uv_tcp_nodelay(&c->h.tcp, 1);
    if (uv_read_start(&c->h.stream, alloc_cb, read_cb) < 0) { fail_all(c); return; }
    if (c->unsent_len > 0 && write_bytes(c, c->unsent, c->unsent_len) < 0) { fail_all(c); return; }
    free(c->unsent);
    c->unsent = NULL;
    c->unsent_len = 0;
    arm_timer(c);
}

lp_upconn *lp_upconn_open(uv_loop_t *loop, const lp_addr *addr, const struct sockaddr *sa,
                          int timeout_ms) {
    lp_upconn *c = calloc(1, sizeof(*c));
    if (c == NULL) return NULL;
    c->reader = redisReaderCreate();
    if (c->reader == NULL) { free(c); return NULL; }
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : 5000;
    if (addr->is_unix) uv_pipe_init(loop, &c->h.pipe, 0);
    else uv_tcp_init(loop, &c->h.tcp);
    uv_timer_init(loop, &c->timer);
    c->h.handle.data = c->timer.data = c->connect_req.data = c;
    c->open_handles = 2;
    int rc;
    if (addr->is_unix) {
        uv_pipe_connect(&c->connect_req, &c->h.pipe, addr->path, connect_cb);
        rc = 0;
    } else {
        rc = uv_tcp_connect(&c->connect_req, &c->h.tcp, sa, connect_cb);
    }
    if (rc < 0) fail_all(c);
    else arm_timer(c);
    return c;
}

int lp_upconn_send(lp_upconn *c, const char *bytes, size_t len, lp_upconn_cb cb, void *ud) {
    if (c == NULL || c->dead) return -1;
    upcmd *k = calloc(1, sizeof(*k));
    if (k == NULL) return -1;
    if (c->connected) {
        if (write_bytes(c, bytes, len) < 0) { free(k); fail_all(c); return -1; }
    } else {
        char *n = realloc(c->unsent, c->unsent_len + len);
        if (n == NULL) { free(k); return -1; }
        memcpy(n + c->unsent_len, bytes, len);
        c->unsent = n;
        c->unsent_len += len;
    }
    k->cb = cb;
    k->ud = ud;
    if (c->tail) c->tail->next = k;
    else c->head = k;
    c->tail = k;
    c->npending++;
    arm_timer(c);
    return 0;
}

void lp_upconn_on_message(lp_upconn *c, lp_upconn_cb cb, void *ud) {
    if (c == NULL) return;
    c->on_message = cb;
    c->message_ud = ud;
}

int lp_upconn_alive(const lp_upconn *c) { return c != NULL && !c->dead; }

size_t lp_upconn_pending(const lp_upconn *c) { return c ? c->npending : 0; }

void lp_upconn_close(lp_upconn *c) {
    if (c == NULL) return;
    c->released = 1;
    if (!c->dead) fail_all(c);
    else if (c->open_handles == 0) handle_closed(&c->h.handle);
}

int lp_upconn_auth(lp_upconn *c, const char *user, const char *password, lp_upconn_cb cb, void *ud) {
    if (password == NULL || password[0] == '\0') return 0;
    int with_user = user != NULL && user[0] != '\0';
    lp_str a = {0};
    resp_enc_head(&a, with_user ? 3 : 2);
    resp_enc_cstr(&a, "AUTH");
    if (with_user) resp_enc_cstr(&a, user);
    resp_enc_cstr(&a, password);
    int rc = lp_upconn_send(c, a.p, a.len, cb, ud);
    explicit_bzero(a.p, a.len);
    lp_str_free(&a);
    return rc;
}
