/* Reply accounting as redis-server does it: see pairing.h. */
#include "proxy/pairing.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "policy/cmdargs.h"

void pairing_init(lp_pairing *p, int authed) {
    memset(p, 0, sizeof(*p));
    p->proto = 2;
    p->authed = (unsigned)!!authed;
}

static void free_mops(multi_op *m, int n) {
    for (int i = 0; i < n; i++) lock_op_free(m[i].op);
    free(m);
}

static void free_mspecs(pend *m, int n) {
    for (int i = 0; i < n; i++) {
        free(m[i].name);
        free(m[i].user);
    }
    free(m);
}

/* Forgets the transaction being queued. */
static void drop_multi(lp_pairing *p) {
    free_mops(p->mops, p->nmops);
    p->mops = NULL;
    p->nmops = 0;
    free_mspecs(p->mspecs, p->nmspecs);
    p->mspecs = NULL;
    p->nmspecs = 0;
}

void pairing_free(lp_pairing *p) {
    while (p->qlen) pairing_pop(p);
    free(p->q);
    drop_multi(p);
    free(p->name);
    free(p->user);
    memset(p, 0, sizeof(*p));
}

/* ---- the queue ---- */

pend *pairing_head(lp_pairing *p) { return p->qlen ? &p->q[p->qhead] : NULL; }

static pend *tail(lp_pairing *p) { return p->qlen ? &p->q[(p->qhead + p->qlen - 1) % p->qcap] : NULL; }

pend *pairing_push(lp_pairing *p, uint8_t kind) {
    if (p->qlen == p->qcap) {
        uint32_t ncap = p->qcap ? p->qcap * 2 : 8;
        pend *nq = malloc(sizeof(*nq) * ncap);
        if (nq == NULL) abort();
        for (uint32_t i = 0; i < p->qlen; i++) nq[i] = p->q[(p->qhead + i) % p->qcap];
        free(p->q);
        p->q = nq;
        p->qcap = ncap;
        p->qhead = 0;
    }
    pend *e = &p->q[(p->qhead + p->qlen) % p->qcap];
    p->qlen++;
    memset(e, 0, sizeof(*e));
    e->kind = kind;
    e->n = 1;
    if (kind != PEND_LOCAL && kind != PEND_SWALLOW) p->nexpected++;
    return e;
}

void pairing_pop(lp_pairing *p) {
    pend *e = pairing_head(p);
    if (e == NULL) return;
    if (e->kind == PEND_LOCAL) p->local_bytes -= e->local_len;
    free(e->local);
    free(e->prev);
    free(e->name);
    free(e->user);
    lock_op_free(e->op);
    free_mops(e->mops, e->nmops);
    free_mspecs(e->mspecs, e->nmspecs);
    if ((e->exec_elem || (e->kind == PEND_EXEC && e->split)) && p->exec_wait > 0) p->exec_wait--;
    p->qhead = (p->qhead + 1) % p->qcap;
    p->qlen--;
    if (p->qlen == 0) {
        p->qhead = 0;
        if (p->losing) p->raw = 1;   /* every reply owed is in: pass through from now on */
    }
}

void pairing_expect(lp_pairing *p, uint32_t n) {
    pend *t = tail(p);
    if (t != NULL && t->kind == PEND_PLAIN && !t->auth && !t->probe && !t->blocking && !t->select &&
        !t->setname && !t->reprobe && !t->acl_change && !t->exec_elem && t->n < UINT32_MAX - n) {
        t->n += n;
        p->nexpected += n;
    }
    else pairing_push(p, PEND_PLAIN)->n = n;
}

void pairing_push_local(lp_pairing *p, const char *bytes, size_t len, int close_after) {
    pend *e = pairing_push(p, PEND_LOCAL);
    e->local = malloc(len ? len : 1);
    if (e->local == NULL) abort();
    memcpy(e->local, bytes, len);
    e->local_len = len;
    p->local_bytes += len;
    e->close_after = (uint8_t)close_after;
}

void pairing_add_multi_op(lp_pairing *p, lock_op *op) {
    if (p->nmops == 0) p->mops_bytes = 0;
    p->mops_bytes += sizeof(*p->mops) + lock_op_bytes(op);
    p->mops = realloc(p->mops, sizeof(*p->mops) * (size_t)(p->nmops + 1));
    if (p->mops == NULL) abort();
    p->mops[p->nmops].index = p->multi_count++;
    p->mops[p->nmops].op = op;
    p->nmops++;
}

void pairing_lose(lp_pairing *p) {
    p->losing = 1;
    p->in_multi = 0;
    drop_multi(p);
    if (p->qlen == 0) p->raw = 1;
}

void pairing_stream(lp_pairing *p) {
    p->losing = 1;
    p->in_multi = 0;
    drop_multi(p);
    p->raw = 1;
    /* Keep LOCAL entries, in order: the session sends them now. */
    uint32_t n = p->qlen;
    for (uint32_t i = 0; i < n; i++) {
        pend *e = pairing_head(p);
        if (e->kind == PEND_LOCAL) {
            pend keep = *e;
            e->local = NULL;
            pairing_pop(p);
            pend *k = pairing_push(p, PEND_LOCAL);
            *k = keep;
            p->local_bytes += keep.local_len;
        } else {
            pairing_pop(p);
        }
    }
}

uint32_t pairing_owed(const pend *e) {
    switch (e->kind) {
    case PEND_PLAIN: return e->n;
    case PEND_OP: return lock_op_extra_elements(e->op) ? 2 : 1;
    case PEND_SWALLOW: case PEND_LOCAL: case PEND_BARRIER: return 0;
    default: return 1;
    }
}

int pairing_subscribed(const lp_pairing *p) { return p->nsub[0] + p->nsub[1] + p->nsub[2] > 0; }

int pairing_sync_starts(const lp_pairing *p, char first) {
    const pend *h = p->qlen ? &p->q[p->qhead] : NULL;
    return h != NULL && h->kind == PEND_SYNC && first != '-' && first != '>';
}

int pairing_captures(const lp_pairing *p) {
    const pend *h = p->qlen ? &p->q[p->qhead] : NULL;
    return h != NULL && (h->kind == PEND_OP || h->kind == PEND_EXEC || h->kind == PEND_SWALLOW || h->kind == PEND_BARRIER);
}

static char *dup_or_null(const char *s, size_t len) {
    if (s == NULL || len == 0) return NULL;
    char *d = malloc(len);
    if (d == NULL) abort();
    memcpy(d, s, len);
    return d;
}

/* Remembers on an AUTH entry the user it authenticates as: "default" for AUTH PASSWORD. */
static void pend_user(pend *e, const resp_arg *user) {
    free(e->user);
    e->user = user ? dup_or_null(user->ptr, user->len) : NULL;
    e->user_len = e->user ? user->len : 0;
}

static void set_name(lp_pairing *p, const char *name, size_t len) {
    free(p->name);
    p->name = NULL;
    p->name_len = 0;
    if (name == NULL || len == 0) return;
    p->name = malloc(len);
    if (p->name == NULL) abort();
    memcpy(p->name, name, len);
    p->name_len = len;
}

/* ---- requests ---- */

/* 1 when an entry of this kind is in the queue. */
static int queued(const lp_pairing *p, uint8_t kind) {
    for (uint32_t i = 0; i < p->qlen; i++)
        if (p->q[(p->qhead + i) % p->qcap].kind == kind) return 1;
    return 0;
}

/* How many replies a subscribe-family command gets, or -1 when c is not one. */
static int sub_command(const resp_request *r, const resp_command *c, uint8_t *family, int *unsub) {
    switch (c->id) {
    case CMD_SUBSCRIBE: *family = SUB_CHANNEL; *unsub = 0; break;
    case CMD_PSUBSCRIBE: *family = SUB_PATTERN; *unsub = 0; break;
    case CMD_SSUBSCRIBE: *family = SUB_SHARD; *unsub = 0; break;
    case CMD_UNSUBSCRIBE: *family = SUB_CHANNEL; *unsub = 1; break;
    case CMD_PUNSUBSCRIBE: *family = SUB_PATTERN; *unsub = 1; break;
    case CMD_SUNSUBSCRIBE: *family = SUB_SHARD; *unsub = 1; break;
    default: return -1;
    }
    return r->argc - 1;
}

/* Commands that may wait on other clients, outside MULTI: BLPOP and friends, WAIT,
 * XREAD/XREADGROUP with BLOCK. An argument "block" anywhere counts, also after STREAMS
 * (where resp_command_blocks() stops looking): the proxy has always erred on the side of
 * blocking there, and this keeps it so. */
static int is_blocking(const resp_request *r, const resp_command *c) {
    if (c->flags & CMDF_BLOCKING) return 1;
    if (c->flags & CMDF_BLOCKING_MAYBE)
        for (int i = 1; i < r->argc; i++)
            if (resp_arg_is(&r->argv[i], "block")) return 1;
    return 0;
}

/* Remembers on a queue entry the name a SETNAME would give: it is taken on success only. */
static void pend_name(pend *e, const resp_arg *a) {
    free(e->name);
    e->name = malloc(a->len + 1);
    if (e->name == NULL) abort();
    memcpy(e->name, a->ptr, a->len);
    e->name_len = a->len;
    e->setname = 1;
}

/* A name Redis's CLIENT SETNAME accepts: printable ASCII without spaces (or empty). */
static int valid_client_name(const resp_arg *a) {
    for (size_t i = 0; i < a->len; i++)
        if (a->ptr[i] < '!' || a->ptr[i] > '~') return 0;
    return 1;
}

/* Reads HELLO [protover [AUTH user pass] [SETNAME name]] as Redis does, options in order:
 * *auth is set when it authenticates, *name (may stay NULL) is the last SETNAME. The two
 * arguments after AUTH are skipped, never looked at: a user name and a password.
 * Returns 0, or -1 when Redis answers a syntax error. */
static int hello_options(const resp_request *r, int *auth, const resp_arg **name, const resp_arg **user) {
    *auth = 0;
    *name = NULL;
    *user = NULL;
    for (int j = 2; j < r->argc; j++) {
        int more = r->argc - 1 - j;
        if (lp_opt_is(&r->argv[j], "auth") && more >= 2) {
            *auth = 1;
            *user = &r->argv[j + 1];
            j += 2;
        } else if (lp_opt_is(&r->argv[j], "setname") && more >= 1) {
            *name = &r->argv[++j];
        } else {
            return -1;
        }
    }
    return 0;
}

/* CLIENT REPLY ON/OFF/SKIP outside MULTI. */
static void client_reply(lp_pairing *p, const resp_arg *mode, int silent) {
    if (resp_arg_is(mode, "on")) {
        p->reply_off = 0;
        p->skip_cur = 0;
        pairing_expect(p, 1);
    } else if (resp_arg_is(mode, "off")) {
        p->reply_off = 1;
        p->skip_cur = 0;
    } else if (resp_arg_is(mode, "skip")) {
        if (!p->reply_off) p->skip_cur = 1;   /* the next frame's reply is skipped */
    } else if (!silent) {
        pairing_expect(p, 1);                 /* Redis's syntax error */
    }
}

/* EXEC (exec 1) or DISCARD: the transaction ends. Returns 1 when its reply is accounted for
 * here (an EXEC with rewritten commands or commands that change accounting, or tracking
 * lost), 0 when it answers as any command. */
static int end_multi(lp_pairing *p, int exec, int silent, pair_req *v) {
    multi_op *m = p->mops;
    int nm = p->nmops;
    pend *ms = p->mspecs;
    int nms = p->nmspecs;
    p->mops = NULL;
    p->nmops = 0;
    p->mspecs = NULL;
    p->nmspecs = 0;
    int was_multi = p->in_multi;
    p->in_multi = 0;
    if (exec && was_multi && nms > 0) {
        if (silent) {
            /* Nothing will say whether EXEC ran (WATCH): what it would do is taken as done
             * where that is harmless (SELECT, a name, CLIENT REPLY OFF/SKIP, a protocol);
             * a subscription or an authentication leaves the proxy unsure. */
            free_mops(m, nm);
            int off = p->reply_off, skip = 0;
            for (int i = 0; i < nms && v->lost == NULL; i++) {
                pend *t = &ms[i];
                if (t->reply_mode == MQ_REPLY_ON || t->kind == PEND_SUB || t->auth ||
                    (t->kind == PEND_HELLO && !p->authed))
                    v->lost = "EXEC with replies off of a transaction that subscribes or authenticates";
                else if (t->reply_mode == MQ_REPLY_OFF) off = 1;
                else if (t->reply_mode == MQ_REPLY_SKIP) skip = !off;
                else if (t->kind == PEND_HELLO && t->proto) p->proto = t->proto;
                else if (t->select) p->db = t->db;
                if (t->setname) {
                    resp_arg a = {t->name, t->name_len};
                    if (valid_client_name(&a)) set_name(p, t->name, t->name_len);
                }
            }
            p->reply_off = off;
            p->skip_cur = skip && !off;
            free_mspecs(ms, nms);
            return v->lost != NULL;
        }
        pend *e = pairing_push(p, PEND_EXEC);
        e->split = 1;
        e->mops = m;
        e->nmops = nm;
        e->mspecs = ms;
        e->nmspecs = nms;
        p->exec_wait++;
        p->exec_hold = 1;
        v->hold = 1;     /* what follows is accounted for once the header says EXEC ran */
        return 1;
    }
    free_mspecs(ms, nms);
    if (nm > 0 && was_multi && !silent && exec) {
        pend *e = pairing_push(p, PEND_EXEC);
        e->mops = m;
        e->nmops = nm;
        return 1;
    }
    free_mops(m, nm);
    return 0;
}

/* Fills a HELLO entry from the request: the protocol asked for, AUTH (and its user), SETNAME.
 * Returns 1 when Redis would find no syntax error in the options. */
static int hello_fill(pend *e, const resp_request *r) {
    int auth;
    const resp_arg *name, *user;
    int okopts = hello_options(r, &auth, &name, &user) == 0;
    if (okopts) {
        e->auth = (uint8_t)auth;
        if (name != NULL) pend_name(e, name);
        if (auth) pend_user(e, user);
    }
    if (r->argc >= 2 && r->argv[1].len == 1 && (r->argv[1].ptr[0] == '2' || r->argv[1].ptr[0] == '3'))
        e->proto = (uint8_t)(r->argv[1].ptr[0] - '0');
    return okopts;
}

static void hello_request(lp_pairing *p, const resp_request *r, pair_req *v) {
    pend *e = pairing_push(p, PEND_HELLO);
    hello_fill(e, r);
    (void)p;
    /* What follows waits: its limits before authentication, the protocol a lock command's
     * reply is made in and whether subscribed RESP2 refuses it depend on HELLO's answer. */
    v->hold = e->holds = 1;
}

/* HELLO with replies silenced: what it does is known when it does not authenticate, the
 * client is authenticated and the options are valid (a protocol switch, a name). Returns 0
 * when the proxy cannot be sure. */
static int hello_silent(lp_pairing *p, const resp_request *r) {
    pend t;
    memset(&t, 0, sizeof(t));
    int okopts = hello_fill(&t, r);
    int known = okopts && !t.auth && p->authed && (r->argc == 1 || t.proto != 0);
    if (known) {
        if (t.proto) p->proto = t.proto;
        if (t.setname) {
            resp_arg a = {t.name, t.name_len};
            if (valid_client_name(&a)) set_name(p, t.name, t.name_len);
        }
    } else if (r->argc >= 2 && t.proto == 0 && !t.auth) {
        known = 1;     /* NOPROTO or a syntax error: nothing changes */
    }
    free(t.name);
    free(t.user);
    return known;
}

/* The database a SELECT asks for, or -1 when Redis would refuse the argument as such. */
static long long select_db(const resp_request *r) {
    long long db = -1;
    if (r->argc != 2 || !resp_parse_ll(r->argv[1].ptr, r->argv[1].len, &db) || db < 0 || db > INT32_MAX) return -1;
    return db;
}

/* A command queued by MULTI that changes reply accounting or what the proxy knows of the
 * client (CLIENT REPLY, the subscribe family, HELLO, SELECT, AUTH, CLIENT SETNAME) is kept,
 * with its place, for EXEC: see pairing.h. */
static void queue_spec(lp_pairing *p, const resp_request *r, const resp_command *c) {
    pend t;
    memset(&t, 0, sizeof(t));
    t.kind = PEND_PLAIN;
    t.n = 1;
    uint8_t fam;
    int unsub, keep = 1;
    int n = sub_command(r, c, &fam, &unsub);
    int is_client = c->id == CMD_CLIENT && r->argc == 3;
    if (is_client && resp_arg_is(&r->argv[1], "reply")) {
        const resp_arg *m = &r->argv[2];
        t.reply_mode = resp_arg_is(m, "on") ? MQ_REPLY_ON : resp_arg_is(m, "off") ? MQ_REPLY_OFF
                     : resp_arg_is(m, "skip") ? MQ_REPLY_SKIP : MQ_REPLY_NONE;
        keep = t.reply_mode != MQ_REPLY_NONE;    /* else a syntax error element */
    } else if (n > 0 || (n == 0 && unsub)) {
        t.kind = PEND_SUB;
        t.family = fam;
        t.n = (uint32_t)n;
    } else if (c->id == CMD_HELLO) {
        t.kind = PEND_HELLO;
        hello_fill(&t, r);
    } else if (c->id == CMD_SELECT) {
        long long db = select_db(r);
        keep = db >= 0;
        t.select = 1;
        t.db = (int32_t)db;
        if (keep) p->multi_db = (int)db;
    } else if (is_client && resp_arg_is(&r->argv[1], "setname")) {
        pend_name(&t, &r->argv[2]);
    } else if (c->id == CMD_AUTH && (r->argc == 2 || r->argc == 3)) {
        t.auth = 1;
        pend_user(&t, r->argc == 3 ? &r->argv[1] : NULL);
    } else {
        keep = 0;
    }
    if (!keep) return;
    t.index = p->multi_count;
    p->mspecs = realloc(p->mspecs, sizeof(*p->mspecs) * (size_t)(p->nmspecs + 1));
    if (p->mspecs == NULL) abort();
    p->mspecs[p->nmspecs++] = t;
}

/* A CONFIG SET or an ACL change may change who must authenticate. */
static int changes_auth(const resp_request *r, const resp_command *c) {
    if (r->argc < 2) return 0;
    const resp_arg *sub = &r->argv[1];
    /* Only what can change whether the default user needs a password: CONFIG SET of
     * requirepass, ACL SETUSER default, ACL LOAD. (A probe is a connection of its own, which
     * Redis counts in its memory and client list: not for every CONFIG SET.) */
    if (c->id == CMD_CONFIG && resp_arg_is(sub, "set")) {
        for (int i = 2; i < r->argc; i += 2)
            if (resp_arg_is(&r->argv[i], "requirepass")) return 1;
        return 0;
    }
    if (c->id != CMD_ACL) return 0;
    if (resp_arg_is(sub, "load")) return 1;
    return resp_arg_is(sub, "setuser") && r->argc >= 3 && r->argv[2].len == 7 &&
           memcmp(r->argv[2].ptr, "default", 7) == 0;
}

static int acl_change(const resp_request *r, const resp_command *c) {
    if (c->id != CMD_ACL || r->argc < 2) return 0;
    const resp_arg *sub = &r->argv[1];
    return resp_arg_is(sub, "setuser") || resp_arg_is(sub, "deluser") || resp_arg_is(sub, "load");
}

/* Any other command outside MULTI. AUTH, SELECT, SETNAME, blocking commands, auth changes
 * and (while the client may be unauthenticated) every command get an entry of their own:
 * their replies teach the proxy something. */
static void plain_request(lp_pairing *p, const resp_request *r, const resp_command *c, const resp_arg *setname,
                          pair_req *v) {
    int is_auth = c->id == CMD_AUTH;
    int is_quit = c->id == CMD_QUIT;
    int blocking = is_blocking(r, c);
    int reprobe = changes_auth(r, c), acl = acl_change(r, c);
    long long db = c->id == CMD_SELECT ? select_db(r) : -1;
    if (!is_auth && !blocking && db < 0 && p->authed && setname == NULL && !reprobe && !acl) {
        pairing_expect(p, 1);
        return;
    }
    pend *e = pairing_push(p, PEND_PLAIN);
    e->auth = (uint8_t)is_auth;
    if (is_auth) pend_user(e, r->argc == 3 ? &r->argv[1] : NULL);
    /* QUIT is answered without authentication: its +OK proves nothing. */
    e->probe = !is_auth && !is_quit && !p->authed;
    e->reprobe = (uint8_t)reprobe;
    e->acl_change = (uint8_t)acl;
    if (setname != NULL) pend_name(e, setname);
    e->blocking = (uint8_t)blocking;
    e->select = db >= 0;
    e->db = (int32_t)db;
    /* Redis's limits before authentication depend on AUTH's answer: wait for it. The lock
     * commands after a SELECT are judged in the database it gives: they wait for it too. */
    if (is_auth && !p->authed) v->hold = 1;
    if (db >= 0) v->hold = 1;
    e->holds = (uint8_t)v->hold;
}

/* After tracking is lost nothing is paired, but whether replies are on is still followed as
 * far as the requests show it (CLIENT REPLY outside MULTI or queued in one, taken as if EXEC
 * ran; RESET), and the replies asked for are counted: a protocol error or QUIT needs both
 * (whether Redis answers it, whether Redis closes after it). Best effort: what is lost is
 * lost. */
static void lost_request(lp_pairing *p, const resp_request *r, const resp_command *c, int silent) {
    if (c == NULL) c = resp_command_lookup(&r->argv[0]);
    int reply = r->argc == 3 && c->id == CMD_CLIENT && resp_arg_is(&r->argv[1], "reply");
    int on = reply && resp_arg_is(&r->argv[2], "on"), off = reply && resp_arg_is(&r->argv[2], "off");
    int skip = reply && resp_arg_is(&r->argv[2], "skip");
    int immediate = !p->in_multi || (c->flags & CMDF_NO_QUEUE);
    if (!silent && !(immediate && (off || skip))) p->nexpected++;
    if (!immediate) {
        if (on || off || skip) p->multi_reply = on ? MQ_REPLY_ON : off ? MQ_REPLY_OFF : MQ_REPLY_SKIP;
        return;
    }
    if (on) { p->reply_off = 0; p->skip_cur = 0; }
    else if (off) { p->reply_off = 1; p->skip_cur = 0; }
    else if (skip && !p->reply_off) p->skip_cur = 1;
    else if (c->id == CMD_RESET) p->in_multi = p->reply_off = p->skip_cur = 0;
    else if (c->id == CMD_MULTI) { if (!p->in_multi) p->multi_reply = MQ_REPLY_NONE; p->in_multi = 1; }
    else if (c->id == CMD_DISCARD) p->in_multi = 0;
    else if (c->id == CMD_EXEC && p->in_multi) {
        p->in_multi = 0;
        if (p->multi_reply == MQ_REPLY_ON) p->reply_off = 0;
        else if (p->multi_reply == MQ_REPLY_OFF) p->reply_off = 1;
        else if (p->multi_reply == MQ_REPLY_SKIP && !p->reply_off) p->skip_cur = 1;
    }
}

/* Mirrors redis-server: CLIENT REPLY OFF/SKIP silence replies, an empty frame still ends a
 * SKIP, MULTI queues commands (one +QUEUED each) except EXEC, DISCARD, MULTI, WATCH, QUIT
 * and RESET (CMDF_NO_QUEUE). */
pair_req pairing_request(lp_pairing *p, const resp_request *r, const resp_command *c) {
    pair_req v;
    memset(&v, 0, sizeof(v));
    int silent = pairing_silent(p), skipped = p->skip_cur;
    /* Redis's resetClient() after every frame, empty ones included, ends a SKIP; CLIENT
     * REPLY SKIP below starts one for the next frame. */
    p->skip_cur = 0;
    if (r->argc == 0) return v;
    if (pairing_lost(p)) {
        lost_request(p, r, c, silent);
        return v;
    }
    if (c == NULL) c = resp_command_lookup(&r->argv[0]);

    int is_client = c->id == CMD_CLIENT && r->argc == 3;
    int immediate = !p->in_multi || (c->flags & CMDF_NO_QUEUE);
    uint8_t fam;
    int unsub;

    if (p->proto == 2 && pairing_subscribed(p) && sub_command(r, c, &fam, &unsub) < 0 && c->id != CMD_PING &&
        c->id != CMD_QUIT && c->id != CMD_RESET) {
        /* Subscribed in RESP2: Redis refuses it with an error and it changes nothing. */
        if (!silent) pairing_expect(p, 1);
        return v;
    }

    if (!immediate) {
        if (silent && is_client && resp_arg_is(&r->argv[1], "reply") && resp_arg_is(&r->argv[2], "on")) {
            /* Replies off, and this turns them on in the middle of EXEC: whether EXEC runs
             * (WATCH, a queued error) decides whether the elements after it come. */
            v.lost = "CLIENT REPLY ON queued in MULTI with replies off";
            return v;
        }
        queue_spec(p, r, c);
        p->multi_count++;
        if (!silent) pairing_expect(p, 1);
        return v;
    }
    if (is_client && resp_arg_is(&r->argv[1], "reply")) {
        client_reply(p, &r->argv[2], silent);
        return v;
    }

    const resp_arg *setname = NULL;
    if (is_client && resp_arg_is(&r->argv[1], "setname")) {
        /* With replies silenced nothing will say whether Redis took the name: judge it as
         * Redis does. */
        if (silent && valid_client_name(&r->argv[2])) set_name(p, r->argv[2].ptr, r->argv[2].len);
        setname = &r->argv[2];
    }

    switch (c->id) {
    case CMD_MULTI:
        if (!p->in_multi) {
            p->multi_count = 0;
            p->multi_db = p->db;
            v.multi_begins = 1;
        }
        p->in_multi = 1;
        break;
    case CMD_EXEC:
    case CMD_DISCARD:
        if (end_multi(p, c->id == CMD_EXEC, silent, &v)) return v;
        break;
    case CMD_QUIT:
        /* Redis answers +OK and closes; nothing after it runs. Silenced, it closes only when
         * a reply is still unwritten (one asked for in the same read of the client's bytes:
         * Redis writes a read's replies after running them all); else it never closes. */
        if (silent && p->nexpected == p->batch_mark) v.discard = 1;
        else v.quit = 1;
        break;
    case CMD_RESET:
        /* RESET turns replies on before it answers; only a SKIP silences it. */
        p->in_multi = p->reply_off = p->skip_cur = 0;
        drop_multi(p);
        set_name(p, NULL, 0);
        if (!skipped) {
            /* The database and protocol lock commands are judged in change with its answer. */
            pairing_push(p, PEND_RESET)->holds = 1;
            v.hold = 1;
        } else {
            /* Nothing will confirm it: RESET always succeeds. Whether the client must
             * authenticate again is re-learnt from the next replies. */
            p->proto = 2;
            p->monitor = 0;
            p->nsub[0] = p->nsub[1] = p->nsub[2] = 0;
            p->db = 0;
            p->authed = 0;
            free(p->user);
            p->user = NULL;
            p->user_len = 0;
        }
        return v;
    case CMD_HELLO:
        if (!silent) hello_request(p, r, &v);
        else if (!hello_silent(p, r)) v.lost = "HELLO AUTH (or HELLO before authenticating) with CLIENT REPLY OFF/SKIP";
        return v;
    case CMD_SELECT:
        if (silent) {
            /* Nothing will confirm it: taken as Redis takes it (a valid index). */
            long long db = select_db(r);
            if (db >= 0) p->db = (int)db;
            return v;
        }
        break;
    case CMD_MONITOR:
        if (!silent) pairing_push(p, PEND_MONITOR);
        return v;
    case CMD_SYNC:
    case CMD_PSYNC:
        /* The replication stream is written to the socket whatever CLIENT REPLY says, and
         * an error would be silenced: nothing tells which it is. */
        if (silent) { v.lost = "SYNC or PSYNC with CLIENT REPLY OFF/SKIP"; return v; }
        /* A MONITOR client is a replica of a kind to Redis, which ignores its SYNC: no reply. */
        if (p->monitor || queued(p, PEND_MONITOR)) return v;
        /* Nothing behind it is framed until its reply shows whether the stream starts.
         * BGSAVE may take long before the first byte: no upstream-timeout. */
        pairing_push(p, PEND_SYNC)->blocking = 1;
        v.hold = 1;
        return v;
    default: {
        int n = sub_command(r, c, &fam, &unsub);
        if (n >= 0) {
            if (silent) { v.lost = "subscribe-family command with CLIENT REPLY OFF/SKIP"; return v; }
            if (n == 0 && !unsub) { pairing_expect(p, 1); return v; }   /* arity error */
            pend *e = pairing_push(p, PEND_SUB);
            e->family = fam;
            e->n = (uint32_t)n;    /* 0: one reply per current subscription, at least one */
            /* Whether the client is subscribed decides how Redis takes what follows (RESP2
             * refuses lock commands then, and the proxy must not rewrite them): wait. */
            v.hold = e->holds = 1;
            return v;
        }
        break;
    }
    }
    if (!silent) plain_request(p, r, c, setname, &v);
    return v;
}

/* ---- replies ---- */

static int head_is(const resp_reply *r, const char *word) {
    size_t n = strlen(word);
    return r->head_len == n && strncasecmp(r->head, word, n) == 0;
}

/* Updates the subscription counts from a (P|S)(UN)SUBSCRIBE confirmation: its last element
 * is the number of subscriptions left (channels plus patterns, or shard channels). */
static int note_subscription(lp_pairing *p, const resp_reply *r) {
    static const char *names[] = {"subscribe", "psubscribe", "ssubscribe", "unsubscribe", "punsubscribe", "sunsubscribe"};
    for (int i = 0; i < 6; i++) {
        if (!head_is(r, names[i])) continue;
        int fam = i % 3, unsub = i >= 3;
        long total = fam == SUB_SHARD ? p->nsub[SUB_SHARD] : p->nsub[SUB_CHANNEL] + p->nsub[SUB_PATTERN];
        if (!unsub && r->last_int > total) p->nsub[fam]++;
        if (unsub && r->last_int < total && p->nsub[fam] > 0) p->nsub[fam]--;
        return 1;
    }
    return 0;
}

/* What a reply teaches about authentication and the client's name. */
static void note_auth(lp_pairing *p, const pend *e, const resp_reply *r, pair_reply *v) {
    int err = r->type == '-';
    if (err && r->line_len >= 6 && memcmp(r->line, "NOAUTH", 6) == 0) {
        p->authed = 0;
        v->auth_required = 1;
    } else if ((e->auth || e->probe || e->kind == PEND_HELLO) && !err) {
        /* A HELLO only succeeds for an authenticated client. */
        p->authed = 1;
        if (e->probe) v->auth_not_required = 1;
    }
    if (e->setname && !err) set_name(p, e->name, e->name_len);
    if (e->auth && !err) {
        free(p->user);
        p->user = dup_or_null(e->user, e->user_len);
        p->user_len = p->user ? e->user_len : 0;
    }
    if (e->reprobe && !err) v->reprobe = 1;
    if (e->acl_change && !err) v->acl_changed = 1;
}

/* One more reply for a SUB entry; pops it when it has all it expects. */
static void sub_reply(lp_pairing *p, pend *e) {
    if (e->n == 0) {
        /* The bare form: one reply per subscription it drops, at least one. The count
         * before this reply is the one that matters; note_subscription has just taken
         * one off when there was one to take. */
        long left = p->nsub[e->family == SUB_SHARD ? SUB_SHARD : e->family];
        if (left <= 0) pairing_pop(p);
        return;
    }
    if (--e->n == 0) pairing_pop(p);
}

static void answer(lp_pairing *p, pend *e, const resp_reply *r, int auth_state) {
    switch (e->kind) {
    case PEND_PLAIN:
        if (e->select && r->type == '+') p->db = e->db;
        if (--e->n == 0) pairing_pop(p);
        break;
    case PEND_SUB:
        if (r->type == '-' || !note_subscription(p, r)) pairing_pop(p);
        else sub_reply(p, e);
        break;
    case PEND_HELLO:
        if (r->type != '-' && e->proto) p->proto = e->proto;
        pairing_pop(p);
        break;
    case PEND_MONITOR:
        if (r->type == '+') p->monitor = 1;
        pairing_pop(p);
        break;
    case PEND_RESET:
        if (r->type == '+' && r->line_len == 5 && memcmp(r->line, "RESET", 5) == 0) {
            p->proto = 2;
            p->monitor = 0;
            p->nsub[0] = p->nsub[1] = p->nsub[2] = 0;
            p->authed = auth_state != LP_AUTH_REQUIRED;
            p->db = 0;
            free(p->user);
            p->user = NULL;
            p->user_len = 0;
        }
        pairing_pop(p);
        break;
    default:
        pairing_pop(p);
        break;
    }
}

/* A MONITOR line: "<seconds>.<micros> [<db> <client>] ...". A status reply that merely
 * starts with a digit (DEBUG DIGEST's hex digest) is an answer. */
static int monitor_line(const char *l, size_t n) {
    size_t i = 0;
    while (i < n && isdigit((unsigned char)l[i])) i++;
    if (i == 0 || i >= n || l[i++] != '.') return 0;
    size_t j = i;
    while (i < n && isdigit((unsigned char)l[i])) i++;
    return i > j && i + 1 < n && l[i] == ' ' && l[i + 1] == '[';
}

pair_reply pairing_reply(lp_pairing *p, const resp_reply *r, int captured, int auth_state) {
    pair_reply v;
    memset(&v, 0, sizeof(v));
    pend *e = pairing_head(p);
    uint32_t qlen = p->qlen;
    int holds = e != NULL && e->holds;
    if (r->type == '>') {
        if (e != NULL && e->kind == PEND_SUB && note_subscription(p, r)) {
            sub_reply(p, e);          /* RESP3: a subscription confirmation is a push */
            v.kind = PAIR_ANSWER;
            v.release_hold = holds && p->qlen < qlen;
            return v;
        }
        v.kind = PAIR_OUT_OF_BAND;
        return v;
    }
    if (r->type == '*' && pairing_subscribed(p) && p->proto != 3 &&
        (head_is(r, "message") || head_is(r, "pmessage") || head_is(r, "smessage"))) {
        v.kind = PAIR_OUT_OF_BAND;    /* RESP2 pub/sub message */
        return v;
    }
    if (p->monitor && r->type == '+' &&
        monitor_line(r->line, r->line_len < RESP_REPLY_HEAD_MAX ? r->line_len : RESP_REPLY_HEAD_MAX)) {
        v.kind = PAIR_OUT_OF_BAND;    /* MONITOR line */
        return v;
    }
    if (captured && e != NULL && e->kind == PEND_SWALLOW) {
        if (e->script_probe) {
            v.script_probe = 1;
            v.scripts_refused = r->type == '-' && r->line_len >= 6 && memcmp(r->line, "NOPERM", 6) == 0;
        }
        pairing_pop(p);
        v.kind = PAIR_SWALLOWED;
        return v;
    }
    if (captured && e != NULL && (e->kind == PEND_OP || e->kind == PEND_EXEC)) {
        v.kind = PAIR_CAPTURED;
        return v;
    }
    if (e == NULL) {
        v.kind = PAIR_LOST;
        return v;
    }
    p->last_protocol_error = r->type == '-' && r->line_len >= 18 && memcmp(r->line, "ERR Protocol error", 18) == 0;
    note_auth(p, e, r, &v);
    v.auth_answered = e->auth;
    v.sync_refused = e->kind == PEND_SYNC;
    answer(p, e, r, auth_state);
    v.release_hold = holds && p->qlen < qlen;
    v.kind = PAIR_ANSWER;
    return v;
}

/* ---- split EXEC ---- */

int pairing_wants_header(const lp_pairing *p) {
    const pend *h = p->qlen ? &p->q[p->qhead] : NULL;
    return h != NULL && h->kind == PEND_EXEC && h->split;
}

int pairing_exec_done(lp_pairing *p) {
    if (!p->exec_hold || p->exec_wait > 0) return 0;
    p->exec_hold = 0;
    return 1;
}

static pend *push_elem(lp_pairing *p, uint8_t kind) {
    pend *e = pairing_push(p, kind);
    e->exec_elem = 1;
    p->exec_wait++;
    return e;
}

/* The count of an aggregate header line "*<n>\r\n", or -1. */
static long long header_count(const char *line, size_t len) {
    if (len < 4 || line[0] != '*' || line[len - 2] != '\r' || line[len - 1] != '\n') return -1;
    long long n;
    if (!resp_parse_ll(line + 1, len - 3, &n) || n < 0) return -1;
    return n;
}

/* Mirrors execCommand(): the elements of the commands queued, in order. CLIENT REPLY OFF
 * silences every element after it (until a CLIENT REPLY ON, which answers), SKIP silences the
 * first reply after EXEC (ON does not undo that: Redis clears only the current skip). */
int pairing_exec_header(lp_pairing *p, const char *line, size_t len, lp_str *hdr, const char **lost) {
    *lost = NULL;
    pend *h = pairing_head(p);
    long long n = header_count(line, len);
    if (h == NULL || n < 0) {
        pairing_pop(p);
        return 0;
    }
    pend ex = *h;
    h->mops = NULL;
    h->nmops = 0;
    h->mspecs = NULL;
    h->nmspecs = 0;
    pairing_pop(p);
    resp_enc_num(hdr, '*', lock_exec_count(ex.mops, ex.nmops, n));
    int off = 0, skip = 0, m = 0, k = 0;
    for (long long i = 0; i < n && *lost == NULL; i++) {
        while (m < ex.nmops && ex.mops[m].index < i) m++;
        while (k < ex.nmspecs && ex.mspecs[k].index < i) k++;
        if (m < ex.nmops && ex.mops[m].index == i) {
            if (!off) {
                pend *e = push_elem(p, PEND_OP);
                e->op = ex.mops[m].op;
                ex.mops[m].op = NULL;
            }
            continue;
        }
        if (k >= ex.nmspecs || ex.mspecs[k].index != i) {
            if (!off) push_elem(p, PEND_PLAIN);
            continue;
        }
        pend *t = &ex.mspecs[k];
        if (t->reply_mode == MQ_REPLY_ON) {
            off = 0;
            push_elem(p, PEND_PLAIN);
            continue;
        }
        if (t->reply_mode == MQ_REPLY_OFF) { off = 1; continue; }
        if (t->reply_mode == MQ_REPLY_SKIP) { if (!off) skip = 1; continue; }
        if (off) {
            /* Silenced: taken as Redis takes it where that is certain. */
            if (t->kind == PEND_HELLO && !t->auth && p->authed) {
                if (t->proto) p->proto = t->proto;   /* HELLO 2/3: a switch; else NOPROTO */
                continue;
            }
            if (t->kind == PEND_SUB || t->kind == PEND_HELLO || t->auth) {
                *lost = "SUBSCRIBE, HELLO or AUTH silenced by CLIENT REPLY OFF inside MULTI/EXEC";
                break;
            }
            if (t->select) p->db = t->db;
            if (t->setname) {
                resp_arg a = {t->name, t->name_len};
                if (valid_client_name(&a)) set_name(p, t->name, t->name_len);
            }
            continue;
        }
        pend *e = push_elem(p, t->kind);
        e->family = t->family;
        e->n = t->n;
        e->proto = t->proto;
        e->auth = t->auth;
        e->select = t->select;
        e->db = t->db;
        e->setname = t->setname;
        e->name = t->name;
        e->name_len = t->name_len;
        e->user = t->user;
        e->user_len = t->user_len;
        t->name = t->user = NULL;
    }
    p->reply_off = off;
    p->skip_cur = skip && !off;
    free_mops(ex.mops, ex.nmops);
    free_mspecs(ex.mspecs, ex.nmspecs);
    return 1;
}
