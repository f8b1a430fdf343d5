/* proxy/pairing.c without a socket or a Redis: every row of Redis's reply accounting as a
 * script of requests and replies with the verdict each must get.
 *
 * A script is a list of steps:
 *   "> CMD ARGS"   a request (inline syntax); a trailing " !lost", " !hold", " !quit" or
 *                  " !discard" after " ;" is the verdict it must get (none: no flag at all)
 *   "<A BYTES"     a reply frame that must be the answer to the head request; "<O" out of
 *                  band, "<L" tracking lost, "<C" captured for the policy, "<S" swallowed
 *   "<H LINE"      the header line of a split EXEC (the head entry must want one); a trailing
 *                  " ;!lost" says the transaction leaves the proxy unsure
 *   "=held" / "=free"  whether requests wait behind a split EXEC (pairing_exec_done not yet)
 *   "#N"           N replies are still owed by the queue
 *   "=raw" / "=proto3" / "=db1" / "=name:x" / "=noname" / "=authed" / "=unauthed" /
 *   "=monitor" / "=sub2" / "=off" / "=on" / "=skip" / "=losing"    state checks
 * Replies use \r\n; "<C" and "<S" steps are judged as captured (the head was OP, EXEC or
 * SWALLOW when they started), as the session does. */
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/pairing.h"
#include "resp/command.h"
#include "policy/lock.h"

static uint32_t owed(lp_pairing *p)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < p->qlen; i++) n += pairing_owed(&p->q[(p->qhead + i) % p->qcap]);
    return n;
}

static const char *req_flags(pair_req v)
{
    static char b[64];
    b[0] = '\0';
    if (v.lost) strcat(b, " !lost");
    if (v.hold) strcat(b, " !hold");
    if (v.quit) strcat(b, " !quit");
    if (v.discard) strcat(b, " !discard");
    return b;
}

static void run(const char *name, const char *const *steps, int authed, int auth_state)
{
    lp_pairing p;
    pairing_init(&p, authed);
    resp_request rq;
    resp_request_init(&rq);
    int failed = 0, nreq = 0;
    for (int i = 0; steps[i] != NULL && !failed; i++) {
        const char *st = steps[i];
        char what[200];
        snprintf(what, sizeof what, "%s: step %d \"%s\"", name, i + 1, st);
        if (st[0] == '>') {
            char line[256];
            const char *semi = strstr(st, " ;");
            size_t n = semi ? (size_t)(semi - st - 2) : strlen(st + 2);
            snprintf(line, sizeof line, "%.*s\r\n", (int)n, st + 2);
            size_t used;
            resp_request_reset(&rq);
            if (resp_request_parse(&rq, line, strlen(line), &used) != RESP_OK) {
                failed = !ok(0, "%s: parses", what);
                break;
            }
            /* Every other request passes the table entry the session would have looked
             * up, the others NULL (pairing looks it up): both must give the same verdicts. */
            const resp_command *cmd = nreq++ % 2 == 0 && rq.argc > 0 ? resp_command_lookup(&rq.argv[0]) : NULL;
            pair_req v = pairing_request(&p, &rq, cmd);
            if (v.lost) pairing_lose(&p);   /* as the session does */
            const char *want = semi ? semi + 2 : "";
            failed = !is_string(req_flags(v), want, "%s", what);
        } else if (st[0] == '<' && st[1] == 'H') {
            char line[64];
            const char *semi = strstr(st, " ;");
            size_t n = semi ? (size_t)(semi - st - 3) : strlen(st + 3);
            snprintf(line, sizeof line, "%.*s", (int)n, st + 3);
            if (!pairing_wants_header(&p)) { failed = !ok(0, "%s: a header is wanted", what); break; }
            lp_str hdr = {0};
            const char *lost = NULL;
            pairing_exec_header(&p, line, strlen(line), &hdr, &lost);
            if (lost) pairing_lose(&p);
            lp_str_free(&hdr);
            failed = !is_int(lost != NULL, semi != NULL, "%s", what);
        } else if (strcmp(st, "=held") == 0 || strcmp(st, "=free") == 0) {
            int done = pairing_exec_done(&p);
            failed = !is_int(!done, st[1] == 'h', "%s", what);
            if (done) p.exec_hold = 0;
        } else if (strcmp(st, "=off") == 0 || strcmp(st, "=on") == 0 || strcmp(st, "=skip") == 0) {
            int want = st[1] == 'o' && st[2] == 'f' ? 1 : st[1] == 's' ? 2 : 0;
            failed = !is_int(p.reply_off ? 1 : p.skip_cur ? 2 : 0, want, "%s", what);
        } else if (strcmp(st, "=losing") == 0) {
            failed = !ok(p.losing && !p.raw, "%s", what);
        } else if (st[0] == '<') {
            char kind = st[1];
            const char *bytes = st + 3;
            resp_reply rp;
            resp_reply_init(&rp);
            size_t used;
            resp_status rs = resp_reply_scan(&rp, bytes, strlen(bytes), &used);
            if (rs != RESP_OK || used != strlen(bytes)) {
                failed = !ok(0, "%s: one whole frame", what);
                resp_reply_free(&rp);
                break;
            }
            int captured = kind == 'C' || kind == 'S';
            pair_reply v = pairing_reply(&p, &rp, captured, auth_state);
            static const char kinds[] = {[PAIR_ANSWER] = 'A', [PAIR_OUT_OF_BAND] = 'O', [PAIR_CAPTURED] = 'C',
                                         [PAIR_SWALLOWED] = 'S', [PAIR_LOST] = 'L'};
            failed = !is_int(kinds[v.kind], kind, "%s", what);
            if (v.kind == PAIR_CAPTURED) pairing_pop(&p);   /* the session's op_reply */
            if (v.kind == PAIR_LOST) pairing_lose(&p);
            resp_reply_free(&rp);
        } else if (st[0] == '#') {
            failed = !is_int(owed(&p), atoi(st + 1), "%s", what);
        } else if (strcmp(st, "=raw") == 0) {
            failed = !ok(p.raw, "%s", what);
        } else if (strcmp(st, "=proto3") == 0) {
            failed = !is_int(p.proto, 3, "%s", what);
        } else if (strcmp(st, "=proto2") == 0) {
            failed = !is_int(p.proto, 2, "%s", what);
        } else if (strncmp(st, "=db", 3) == 0) {
            failed = !is_int(p.db, atoi(st + 3), "%s", what);
        } else if (strncmp(st, "=name:", 6) == 0) {
            char got[128];
            snprintf(got, sizeof got, "%.*s", (int)p.name_len, p.name ? p.name : "");
            failed = !is_string(got, st + 6, "%s", what);
        } else if (strcmp(st, "=noname") == 0) {
            failed = !ok(p.name == NULL, "%s", what);
        } else if (strcmp(st, "=authed") == 0) {
            failed = !ok(p.authed, "%s", what);
        } else if (strcmp(st, "=unauthed") == 0) {
            failed = !ok(!p.authed, "%s", what);
        } else if (strcmp(st, "=monitor") == 0) {
            failed = !ok(p.monitor, "%s", what);
        } else if (strncmp(st, "=sub", 4) == 0) {
            failed = !is_int(p.nsub[0] + p.nsub[1] + p.nsub[2], atoi(st + 4), "%s", what);
        } else {
            failed = !ok(0, "%s: unknown step", what);
        }
    }
    if (!failed) ok(1, "%s", name);
    resp_request_free(&rq);
    pairing_free(&p);
}

#define S(...) ((const char *const[]){__VA_ARGS__, NULL})

/* Whether a reply's first byte starts the replication stream of a SYNC at the head. */
static void sync_starts(void)
{
    lp_pairing p;
    pairing_init(&p, 1);
    resp_request rq;
    resp_request_init(&rq);
    size_t used;
    ok(!pairing_sync_starts(&p, '\n'), "no SYNC pending: nothing starts a stream");
    resp_request_parse(&rq, "SYNC\r\n", 6, &used);
    pairing_request(&p, &rq, NULL);
    ok(pairing_sync_starts(&p, '\n'), "SYNC at the head: a bare \\n keepalive starts the stream");
    ok(pairing_sync_starts(&p, '$'), "SYNC at the head: the RDB bulk starts it");
    ok(pairing_sync_starts(&p, '+'), "SYNC at the head: +FULLRESYNC/+CONTINUE start it");
    ok(!pairing_sync_starts(&p, '-'), "SYNC at the head: an error line is its reply");
    ok(!pairing_sync_starts(&p, '>'), "SYNC at the head: a RESP3 push is out of band");
    ok(pairing_head(&p)->blocking, "SYNC: no upstream-timeout before its first byte");
    resp_request_free(&rq);
    pairing_free(&p);
}

int main(void)
{
    plan_lazy();
    sync_starts();
    /* Plain commands, pipelined: one run-length entry. */
    run("pipeline", S("> GET a", "> GET b", "> SET c 1", "#3", "<A $-1\r\n", "<A $-1\r\n", "#1",
                      "<A +OK\r\n", "#0", "<L +OK\r\n", "=raw"), 1, LP_AUTH_NOT_REQUIRED);
    run("empty frames get nothing", S("> ", "#0"), 1, LP_AUTH_NOT_REQUIRED);
    /* MULTI: +QUEUED per command, EXEC one array; immediate commands inside. */
    run("multi/exec", S("> MULTI", "> SET a 1", "> WATCH x", "> EXEC", "#4", "<A +OK\r\n", "<A +QUEUED\r\n",
                        "<A -ERR WATCH inside MULTI is not allowed\r\n", "<A *1\r\n+OK\r\n", "#0"), 1, 0);
    run("multi/discard", S("> MULTI", "> GET a", "> DISCARD", "#3"), 1, 0);
    run("nested multi", S("> MULTI", "> MULTI", "> EXEC", "#3"), 1, 0);
    run("exec without multi", S("> EXEC", "#1", "<A -ERR EXEC without MULTI\r\n"), 1, 0);
    /* CLIENT REPLY. */
    run("reply off", S("> CLIENT REPLY OFF", "> GET a", "> GET b", "#0", "> CLIENT REPLY ON", "#1",
                       "> GET c", "#2"), 1, 0);
    run("reply skip", S("> CLIENT REPLY SKIP", "> GET a", "#0", "> GET b", "#1"), 1, 0);
    run("skip ended by an empty frame", S("> CLIENT REPLY SKIP", "> ", "> GET b", "#1"), 1, 0);
    run("reply on while skipping", S("> CLIENT REPLY SKIP", "> CLIENT REPLY ON", "#1"), 1, 0);
    /* CLIENT REPLY, SUBSCRIBE, HELLO, SELECT inside MULTI take effect at EXEC, element by
     * element (a split EXEC: the requests behind it wait for its header and elements). */
    run("client reply off inside multi", S("> MULTI", "> CLIENT REPLY OFF", "> GET a", "> EXEC ; !hold", "#4",
                                           "<A +OK\r\n", "<A +QUEUED\r\n", "<A +QUEUED\r\n", "=held", "<H *2\r\n",
                                           "#0", "=off", "=free", "> GET b", "#0"), 1, 0);
    run("client reply skip inside multi", S("> MULTI", "> CLIENT REPLY SKIP", "> GET a", "> EXEC ; !hold",
                                            "<A +OK\r\n", "<A +QUEUED\r\n", "<A +QUEUED\r\n", "<H *2\r\n", "#1",
                                            "=skip", "=held", "<A $-1\r\n", "=free", "> GET b", "#0", "> GET c", "#1"), 1, 0);
    run("off then on inside multi", S("> CLIENT REPLY OFF", "> CLIENT REPLY ON", "<A +OK\r\n", "> MULTI",
                                      "> CLIENT REPLY OFF", "> GET a", "> CLIENT REPLY ON", "> GET b", "> EXEC ; !hold",
                                      "#6", "<A +OK\r\n", "<A +QUEUED\r\n", "<A +QUEUED\r\n", "<A +QUEUED\r\n",
                                      "<A +QUEUED\r\n", "<H *4\r\n", "#2", "=on", "<A +OK\r\n", "<A $-1\r\n",
                                      "=free"), 1, 0);
    run("client reply on inside multi, discarded", S("> MULTI", "> CLIENT REPLY ON", "> DISCARD", "#3",
                                                     "> GET a", "#4"), 1, 0);
    run("exec that did not run", S("> MULTI", "> CLIENT REPLY OFF", "> EXEC ; !hold", "<A +OK\r\n",
                                   "<A +QUEUED\r\n", "<H *-1\r\n", "=on", "=free", "#0"), 1, 0);
    run("quit with replies off", S("> CLIENT REPLY OFF", "> QUIT ; !discard", "#0"), 1, 0);
    run("quit", S("> QUIT ; !quit", "#1", "<A +OK\r\n"), 1, 0);
    /* SYNC/PSYNC hold what follows until their reply: an error line answers them. */
    run("sync refused", S("> SYNC ; !hold", "#1", "<A -NOAUTH Authentication required.\r\n", "#0"), 1, 0);
    run("psync refused, then a command", S("> PSYNC ; !hold", "<A -ERR wrong number of arguments\r\n", "> PING", "#1"), 1, 0);
    run("psync inside multi is queued", S("> MULTI", "> PSYNC ? -1", "#2", "<A +OK\r\n",
                                          "<A -ERR Command not allowed inside a transaction\r\n", "#0"), 1, 0);
    run("sync from a monitor client gets no reply", S("> MONITOR", "> SYNC", "> PING", "#2", "<A +OK\r\n",
                                                      "> PSYNC ? -1", "#1", "=monitor"), 1, 0);
    run("sync with replies off loses tracking", S("> CLIENT REPLY OFF", "> SYNC ; !lost", "=raw"), 1, 0);
    /* Subscriptions. */
    run("subscribe two", S("> SUBSCRIBE a b ; !hold", "#1",
                           "<A *3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n",
                           "<A *3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n", "#0", "=sub2",
                           "<O *3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n",
                           "> UNSUBSCRIBE ; !hold", "<A *3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n",
                           "<A *3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n", "#0", "=sub0"), 1, 0);
    run("bare unsubscribe when not subscribed", S("> UNSUBSCRIBE ; !hold",
                           "<A *3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n", "#0"), 1, 0);
    run("subscribe two inside multi", S("> MULTI", "> SUBSCRIBE a b", "> PING", "> EXEC ; !hold", "<A +OK\r\n",
                                        "<A +QUEUED\r\n", "<A +QUEUED\r\n", "<H *2\r\n",
                                        "<A *3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n",
                                        "<A *3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n", "=sub2",
                                        "<A *2\r\n$4\r\npong\r\n$0\r\n\r\n", "#0", "=free"), 1, 0);
    run("subscribe after off inside multi", S("> MULTI", "> CLIENT REPLY OFF", "> SUBSCRIBE a", "> EXEC ; !hold",
                                              "<A +OK\r\n", "<A +QUEUED\r\n", "<A +QUEUED\r\n",
                                              "<H *2\r\n ;!lost", "=raw"), 1, 0);
    run("subscribe with replies off", S("> CLIENT REPLY OFF", "> SUBSCRIBE a ; !lost"), 1, 0);
    run("subscribe arity error", S("> SUBSCRIBE", "#1", "<A -ERR wrong number of arguments\r\n"), 1, 0);
    run("resp3 push confirmation", S("> HELLO 3 ; !hold", "<A %1\r\n+proto\r\n:3\r\n", "=proto3", "> SUBSCRIBE a ; !hold",
                                     "<A >3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n", "#0",
                                     "<O >3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nx\r\n"), 1, 0);
    /* MONITOR. */
    run("monitor", S("> MONITOR", "<A +OK\r\n", "=monitor", "<O +1700000000.1 [0 1.2.3.4:5] \"get\"\r\n",
                     "> DEBUG DIGEST", "<A +0000000000000000000000000000000000000000\r\n"), 1, 0);
    /* HELLO, RESET. */
    run("hello fails", S("> HELLO 4 ; !hold", "<A -NOPROTO unsupported protocol version\r\n", "=proto2"), 1, 0);
    run("hello with replies off", S("> CLIENT REPLY OFF", "> HELLO 3", "=proto3", "> HELLO 4", "=proto3"), 1, 0);
    run("hello auth with replies off", S("> CLIENT REPLY OFF", "> HELLO 3 AUTH u p ; !lost", "=raw"), 1, 0);
    run("hello inside multi", S("> MULTI", "> HELLO 3", "> SELECT 2", "> EXEC ; !hold", "<A +OK\r\n",
                                "<A +QUEUED\r\n", "<A +QUEUED\r\n", "<H *2\r\n", "=proto2",
                                "<A %1\r\n+proto\r\n:3\r\n", "=proto3", "=db0", "<A +OK\r\n", "=db2"), 1, 0);
    run("select inside multi that fails", S("> MULTI", "> SELECT 99", "> EXEC ; !hold", "<A +OK\r\n",
                                            "<A +QUEUED\r\n", "<H *1\r\n",
                                            "<A -ERR DB index is out of range\r\n", "=db0"), 1, 0);
    run("select with replies off", S("> CLIENT REPLY OFF", "> SELECT 1", "=db1", "> SELECT x", "=db1"), 1, 0);
    run("reset with replies off answers", S("> CLIENT REPLY OFF", "> RESET ; !hold", "#1", "<A +RESET\r\n", "=on",
                                            "> GET a", "#1"), 1, 0);
    run("reset skipped", S("> HELLO 3 ; !hold", "<A %1\r\n+a\r\n:1\r\n", "> CLIENT REPLY SKIP", "> RESET", "#0",
                           "=proto2", "> GET a", "#1"), 1, 0);
    run("reset", S("> HELLO 3 ; !hold", "<A %1\r\n+a\r\n:1\r\n", "> SELECT 1 ; !hold", "<A +OK\r\n", "=db1",
                   "> CLIENT SETNAME n1", "<A +OK\r\n", "=name:n1",
                   "> RESET ; !hold", "<A +RESET\r\n", "=proto2", "=db0", "=noname"), 1, 0);
    /* SELECT. */
    run("select", S("> SELECT 3 ; !hold", "<A +OK\r\n", "=db3", "> SELECT 010",
                    "<A -ERR value is not an integer\r\n", "=db3", "> SELECT 99 ; !hold",
                    "<A -ERR DB index is out of range\r\n", "=db3"), 1, 0);
    /* Names: only what Redis accepted. */
    run("setname refused", S("> CLIENT SETNAME a", "<A +OK\r\n", "=name:a",
                             "> CLIENT SETNAME b", "<A -ERR Client names cannot contain spaces\r\n", "=name:a"), 1, 0);
    run("hello setname", S("> HELLO 2 SETNAME w1 ; !hold", "<A *2\r\n$1\r\na\r\n:1\r\n", "=name:w1"), 1, 0);
    run("hello auth failure names nobody", S("> HELLO 2 AUTH u wrong SETNAME forged ; !hold",
                                             "<A -WRONGPASS invalid username-password pair\r\n", "=noname"), 0, LP_AUTH_REQUIRED);
    run("hello auth user named setname", S("> HELLO 2 AUTH setname pw ; !hold",
                                           "<A *2\r\n$1\r\na\r\n:1\r\n", "=noname", "=authed"), 0, LP_AUTH_REQUIRED);
    run("setname with replies off", S("> CLIENT REPLY OFF", "> CLIENT SETNAME ok", "=name:ok",
                                      "> CLIENT SETNAME bad\tname", "=name:ok"), 1, 0);
    /* Authentication. */
    run("auth", S("> GET a", "<A -NOAUTH Authentication required.\r\n", "=unauthed", "> AUTH pw ; !hold",
                  "<A +OK\r\n", "=authed"), 0, LP_AUTH_REQUIRED);
    run("quit proves nothing", S("> QUIT ; !quit", "<A +OK\r\n", "=unauthed"), 0, LP_AUTH_UNKNOWN);
    run("a probe", S("> GET a", "<A $-1\r\n", "=authed"), 0, LP_AUTH_UNKNOWN);
    run("reset falls back to the default", S("> AUTH pw ; !hold", "<A +OK\r\n", "=authed", "> RESET ; !hold",
                                              "<A +RESET\r\n", "=unauthed"), 0, LP_AUTH_REQUIRED);
    /* Blocking commands get an entry of their own. */
    run("blocking", S("> GET a", "> BLPOP q 0", "> GET b", "#3", "<A $-1\r\n", "<A *-1\r\n", "<A $-1\r\n", "#0"), 1, 0);
    /* Replies nobody asked for. */
    run("stray reply", S("<L +OK\r\n", "=raw"), 1, 0);
    /* Captured replies: a rewritten command's and a swallowed +QUEUED. */
    {
        lp_pairing p;
        pairing_init(&p, 1);
        pend *e = pairing_push(&p, PEND_SWALLOW);
        (void)e;
        pairing_push(&p, PEND_EXEC);
        ok(pairing_captures(&p), "swallow at the head: captured");
        resp_reply rp;
        resp_reply_init(&rp);
        size_t used;
        resp_reply_scan(&rp, "+QUEUED\r\n", 9, &used);
        is_int(pairing_reply(&p, &rp, 1, 0).kind, PAIR_SWALLOWED, "  +QUEUED swallowed");
        resp_reply_free(&rp);
        resp_reply_init(&rp);
        resp_reply_scan(&rp, "*1\r\n:1\r\n", 8, &used);
        is_int(pairing_reply(&p, &rp, 1, 0).kind, PAIR_CAPTURED, "  EXEC captured");
        is_int(p.qlen, 1, "  and still at the head for the policy");
        resp_reply_free(&rp);
        pairing_free(&p);
    }
    /* At the loss of tracking every reply owed is still paired, locals in their place; then raw. */
    {
        lp_pairing p;
        pairing_init(&p, 1);
        pairing_expect(&p, 2);
        pairing_push_local(&p, "+L1\r\n", 5, 0);
        pairing_expect(&p, 1);
        pairing_push_local(&p, "+L2\r\n", 5, 1);
        pairing_lose(&p);
        ok(p.losing && !p.raw, "lose: draining, not raw yet");
        is_int(p.qlen, 4, "  every entry kept");
        resp_request rq;
        resp_request_init(&rq);
        size_t used;
        resp_request_parse(&rq, "GET x\r\n", 7, &used);
        pair_req v = pairing_request(&p, &rq, NULL);
        is_int(p.qlen, 4, "  a request after the loss is not accounted for");
        ok(v.lost == NULL && !v.hold, "  and gets no verdict");
        resp_request_free(&rq);
        resp_reply rp;
        resp_reply_init(&rp);
        resp_reply_scan(&rp, "+OK\r\n", 5, &used);
        is_int(pairing_reply(&p, &rp, 0, 0).kind, PAIR_ANSWER, "  an owed reply is still an answer");
        is_int(pairing_reply(&p, &rp, 0, 0).kind, PAIR_ANSWER, "  the second too");
        resp_reply_free(&rp);
        pend *h = pairing_head(&p);
        ok(h && h->kind == PEND_LOCAL && h->local_len == 5 && memcmp(h->local, "+L1", 3) == 0, "  then the first local");
        pairing_pop(&p);
        ok(!p.raw, "  not raw while one reply is owed");
        pairing_pop(&p);
        h = pairing_head(&p);
        ok(h && h->close_after && memcmp(h->local, "+L2", 3) == 0, "  then the second local, with its close");
        pairing_pop(&p);
        ok(p.raw && p.qlen == 0, "  raw once the queue is empty");
        pairing_free(&p);
    }
    return 0;
}
