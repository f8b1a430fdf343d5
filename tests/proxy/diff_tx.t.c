/* Differential tests, transactions: MULTI/EXEC/DISCARD, queued errors and EXECABORT, errors
 * at EXEC time, WATCH with and without a conflicting write from another connection. */
#include <string.h>

#include "lib/harness.h"

static hp_proc *redis, *proxy;

static void diff_has(const char *name, const hp_step *steps, const char *want)
{
    hp_side d, p;
    hp_diff_ex(redis, proxy, name, steps, NULL, &d, &p);
    ok(hp_buf_has(&d.out, want, strlen(want)), "%s: Redis's answer has \"%s\"", name,
       hp_esc(want, strlen(want), 100));
    hp_side_free(&d);
    hp_side_free(&p);
}

static void test_multi(void)
{
    static const hp_step basic[] = {
        HP_SEND("MULTI\r\nSET a 1\r\nINCR a\r\nGET a\r\nLPUSH l x y\r\nLRANGE l 0 -1\r\nEXEC\r\n"), HP_END
    };
    diff_has("MULTI/EXEC", basic, "+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n"
                                  "*5\r\n+OK\r\n:2\r\n$1\r\n2\r\n:2\r\n*2\r\n$1\r\ny\r\n$1\r\nx\r\n");

    static const hp_step arity[] = {
        HP_SEND("MULTI\r\nSET a\r\nGET a\r\nEXEC\r\nGET a\r\n"), HP_END
    };
    diff_has("queued error (wrong arity), EXECABORT", arity,
             "+OK\r\n-ERR wrong number of arguments for 'set' command\r\n+QUEUED\r\n"
             "-EXECABORT Transaction discarded because of previous errors.\r\n$-1\r\n");

    static const hp_step unknown[] = {
        HP_SEND("MULTI\r\nSET a 1\r\nNOSUCH x\r\nEXEC\r\nEXISTS a\r\n"), HP_END
    };
    diff_has("queued error (unknown command), EXECABORT", unknown, "-EXECABORT");

    static const hp_step runtime[] = {
        HP_SEND("SET s str\r\nMULTI\r\nINCR s\r\nSET b 2\r\nLPUSH s x\r\nEXEC\r\nGET b\r\n"), HP_END
    };
    diff_has("errors at EXEC time are elements of the EXEC reply", runtime,
             "*3\r\n-ERR value is not an integer or out of range\r\n+OK\r\n-WRONGTYPE");

    static const hp_step discard[] = {
        HP_SEND("MULTI\r\nSET d 1\r\nDISCARD\r\nGET d\r\nDISCARD\r\nEXEC\r\n"), HP_END
    };
    diff_has("DISCARD, and DISCARD/EXEC without MULTI", discard,
             "+OK\r\n+QUEUED\r\n+OK\r\n$-1\r\n-ERR DISCARD without MULTI\r\n-ERR EXEC without MULTI\r\n");

    static const hp_step nested[] = {
        HP_SEND("MULTI\r\nMULTI\r\nWATCH x\r\nPING\r\nEXEC\r\n"), HP_END
    };
    diff_has("nested MULTI and WATCH inside MULTI", nested, "-ERR MULTI calls can not be nested\r\n");

    static const hp_step empty[] = { HP_SEND("MULTI\r\nEXEC\r\nMULTI\r\nPING\r\nSELECT 1\r\nEXEC\r\n"), HP_END };
    diff_has("empty transaction, SELECT inside", empty, "+OK\r\n*0\r\n");

    static const hp_step resp3[] = {
        HP_SEND("HELLO 3\r\nMULTI\r\nHSET h f v\r\nHGETALL h\r\nZADD z 2 m\r\nZSCORE z m\r\nEXEC\r\n"), HP_END
    };
    hp_diff_opts norm = { .normalise = hp_norm_hello };
    hp_diff(redis, proxy, "MULTI/EXEC in RESP3", resp3, &norm);

    /* A transaction split over several packets with pauses. */
    static const hp_step split[] = {
        HP_SEND("MULTI\r\n"), HP_PAUSE(50), HP_SEND("SET p 1\r\nINC"), HP_PAUSE(50),
        HP_SEND("R p\r\n"), HP_PAUSE(50), HP_SEND("EXEC\r\n"), HP_END
    };
    diff_has("MULTI/EXEC in pieces", split, "*2\r\n+OK\r\n:2\r\n");
}

static void conflicting_write(const hp_proc *side, const hp_proc *r, void *arg)
{
    (void)r;
    ok(hp_cmd_ok(side, "SET %s other", (const char *)arg),
       "WATCH: %s: another connection writes the watched key", side->name);
}

static void test_watch(void)
{
    static const hp_step conflict[] = {
        HP_SEND("SET wk 1\r\nWATCH wk\r\n"),
        HP_WAIT_MATCH("+OK\r\n+OK\r\n"),
        HP_CALL(conflicting_write, "wk"),
        HP_SEND("MULTI\r\nINCR wk\r\nEXEC\r\nGET wk\r\n"),
        HP_END
    };
    diff_has("WATCH conflict: EXEC answers nil", conflict,
             "+OK\r\n+OK\r\n+OK\r\n+QUEUED\r\n*-1\r\n$5\r\nother\r\n");

    static const hp_step inside[] = {
        HP_SEND("SET wk 1\r\nWATCH wk\r\nMULTI\r\nINCR wk\r\n"),
        HP_WAIT_MATCH("+QUEUED\r\n"),
        HP_CALL(conflicting_write, "wk"),
        HP_SEND("EXEC\r\n"),
        HP_END
    };
    diff_has("WATCH conflict while queueing", inside, "+QUEUED\r\n*-1\r\n");

    static const hp_step none[] = {
        HP_SEND("SET wk 1\r\nWATCH wk\r\n"),
        HP_WAIT_MATCH("+OK\r\n+OK\r\n"),
        HP_CALL(conflicting_write, "unrelated"),
        HP_SEND("MULTI\r\nINCR wk\r\nEXEC\r\n"),
        HP_END
    };
    diff_has("WATCH without conflict: EXEC runs", none, "+QUEUED\r\n*1\r\n:2\r\n");

    static const hp_step unwatch[] = {
        HP_SEND("SET wk 1\r\nWATCH wk\r\nUNWATCH\r\n"),
        HP_WAIT_MATCH("+OK\r\n+OK\r\n+OK\r\n"),
        HP_CALL(conflicting_write, "wk"),
        HP_SEND("MULTI\r\nGET wk\r\nEXEC\r\n"),
        HP_END
    };
    diff_has("UNWATCH, then a write: EXEC runs", unwatch, "*1\r\n$5\r\nother\r\n");

    hp_diff_opts norm = { .normalise = hp_norm_hello };
    static const hp_step resp3[] = {
        HP_SEND("HELLO 3\r\nSET wk 1\r\nWATCH wk\r\n"),
        HP_WAIT_MATCH("+OK\r\n+OK\r\n"),
        HP_CALL(conflicting_write, "wk"),
        HP_SEND("MULTI\r\nINCR wk\r\nEXEC\r\n"),
        HP_END
    };
    hp_side d, p;
    hp_diff_ex(redis, proxy, "WATCH conflict in RESP3: EXEC answers _", resp3, &norm, &d, &p);
    ok(d.out.len >= 3 && memcmp(d.out.data + d.out.len - 3, "_\r\n", 3) == 0,
       "WATCH conflict in RESP3: Redis's EXEC answered _");
    hp_side_free(&d);
    hp_side_free(&p);
}

int main(void)
{
    plan_lazy();
    redis = hp_redis_start(NULL);
    proxy = hp_proxy_start(redis, NULL);

    test_multi();
    test_watch();

    is_int(hp_stop(proxy, 10000), 0, "the proxy exits 0 on SIGTERM");
    return 0;
}
