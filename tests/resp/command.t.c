/* Command table (resp/command.c): every name is found in lower, upper and mixed case, from
 * a buffer that is not NUL-terminated; wrong lengths, near misses, an empty name and NUL or
 * non-ASCII bytes give CMD_OTHER; each command has the flags and key positions below; and
 * resp_command_blocks() tells a blocking XREAD from one without BLOCK.
 *
 * The expected results come from a reference lookup written here the slow way (a copy of
 * the name, folded, compared with strcmp against this file's table), so a near miss that
 * happens to be another command's name is still checked against the right answer. */
#include "tap.h"
#include "resp/command.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LK CMDF_LOCK_KEY
#define BL CMDF_BLOCKING
#define BM CMDF_BLOCKING_MAYBE
#define AC CMDF_ACCOUNTING
#define NQ CMDF_NO_QUEUE
#define WR CMDF_WRITE

static const struct want {
    const char *name;
    resp_command_id id;
    unsigned flags;
    resp_command_keys keys;
} table[] = {
    {"get", CMD_GET, LK, RESP_KEYS_FIRST},
    {"set", CMD_SET, LK | WR, RESP_KEYS_FIRST},
    {"setnx", CMD_SETNX, LK | WR, RESP_KEYS_FIRST},
    {"expire", CMD_EXPIRE, LK | WR, RESP_KEYS_FIRST},
    {"pexpire", CMD_PEXPIRE, LK | WR, RESP_KEYS_FIRST},
    {"expireat", CMD_EXPIREAT, LK | WR, RESP_KEYS_FIRST},
    {"pexpireat", CMD_PEXPIREAT, LK | WR, RESP_KEYS_FIRST},
    {"persist", CMD_PERSIST, LK | WR, RESP_KEYS_FIRST},
    {"del", CMD_DEL, LK | WR, RESP_KEYS_ALL},
    {"unlink", CMD_UNLINK, LK | WR, RESP_KEYS_ALL},
    {"getset", CMD_GETSET, LK | WR, RESP_KEYS_FIRST},
    {"getex", CMD_GETEX, LK | WR, RESP_KEYS_FIRST},
    {"getdel", CMD_GETDEL, LK | WR, RESP_KEYS_FIRST},
    {"eval", CMD_EVAL, LK | WR, RESP_KEYS_NUMKEYS},
    {"evalsha", CMD_EVALSHA, LK | WR, RESP_KEYS_NUMKEYS},
    {"eval_ro", CMD_EVAL_RO, LK, RESP_KEYS_NUMKEYS},
    {"evalsha_ro", CMD_EVALSHA_RO, LK, RESP_KEYS_NUMKEYS},
    {"fcall", CMD_FCALL, LK | WR, RESP_KEYS_NUMKEYS},
    {"fcall_ro", CMD_FCALL_RO, LK, RESP_KEYS_NUMKEYS},
    {"multi", CMD_MULTI, AC | NQ, RESP_KEYS_NONE},
    {"exec", CMD_EXEC, AC | NQ, RESP_KEYS_NONE},
    {"discard", CMD_DISCARD, AC | NQ, RESP_KEYS_NONE},
    {"watch", CMD_WATCH, NQ, RESP_KEYS_NONE},
    {"unwatch", CMD_UNWATCH, 0, RESP_KEYS_NONE},
    {"quit", CMD_QUIT, AC | NQ, RESP_KEYS_NONE},
    {"reset", CMD_RESET, AC | NQ, RESP_KEYS_NONE},
    {"hello", CMD_HELLO, AC, RESP_KEYS_NONE},
    {"auth", CMD_AUTH, AC, RESP_KEYS_NONE},
    {"select", CMD_SELECT, AC, RESP_KEYS_NONE},
    {"client", CMD_CLIENT, AC, RESP_KEYS_NONE},
    {"monitor", CMD_MONITOR, AC, RESP_KEYS_NONE},
    {"subscribe", CMD_SUBSCRIBE, AC, RESP_KEYS_NONE},
    {"psubscribe", CMD_PSUBSCRIBE, AC, RESP_KEYS_NONE},
    {"ssubscribe", CMD_SSUBSCRIBE, AC, RESP_KEYS_NONE},
    {"unsubscribe", CMD_UNSUBSCRIBE, AC, RESP_KEYS_NONE},
    {"punsubscribe", CMD_PUNSUBSCRIBE, AC, RESP_KEYS_NONE},
    {"sunsubscribe", CMD_SUNSUBSCRIBE, AC, RESP_KEYS_NONE},
    {"sync", CMD_SYNC, AC, RESP_KEYS_NONE},
    {"psync", CMD_PSYNC, AC, RESP_KEYS_NONE},
    {"blpop", CMD_BLPOP, BL | WR, RESP_KEYS_NONE},
    {"brpop", CMD_BRPOP, BL | WR, RESP_KEYS_NONE},
    {"brpoplpush", CMD_BRPOPLPUSH, BL | WR, RESP_KEYS_NONE},
    {"blmove", CMD_BLMOVE, BL | WR, RESP_KEYS_NONE},
    {"blmpop", CMD_BLMPOP, BL | WR, RESP_KEYS_NONE},
    {"bzpopmin", CMD_BZPOPMIN, BL | WR, RESP_KEYS_NONE},
    {"bzpopmax", CMD_BZPOPMAX, BL | WR, RESP_KEYS_NONE},
    {"bzmpop", CMD_BZMPOP, BL | WR, RESP_KEYS_NONE},
    {"wait", CMD_WAIT, BL, RESP_KEYS_NONE},
    {"waitaof", CMD_WAITAOF, BL, RESP_KEYS_NONE},
    {"xread", CMD_XREAD, BM, RESP_KEYS_NONE},
    {"xreadgroup", CMD_XREADGROUP, BM | WR, RESP_KEYS_NONE},
    {"config", CMD_CONFIG, 0, RESP_KEYS_NONE},
    {"acl", CMD_ACL, 0, RESP_KEYS_NONE},
    {"ping", CMD_PING, 0, RESP_KEYS_NONE},
};
#define NTABLE (sizeof table / sizeof table[0])

/* The reference: a NUL-terminated folded copy (NULL when the bytes hold a NUL or a byte
 * that folding must leave alone but strcmp could not tell apart), compared by strcmp. */
static resp_command_id ref_lookup(const char *p, size_t n)
{
    char copy[64];
    if (n == 0 || n >= sizeof copy) return CMD_OTHER;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == 0) return CMD_OTHER;
        copy[i] = (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
    }
    copy[n] = '\0';
    for (size_t i = 0; i < NTABLE; i++)
        if (strcmp(copy, table[i].name) == 0) return table[i].id;
    return CMD_OTHER;
}

static const char *id_name(resp_command_id id)
{
    for (size_t i = 0; i < NTABLE; i++)
        if (table[i].id == id) return table[i].name;
    return "(other)";
}

/* Looks p[0..n) up from a heap copy of exactly n bytes, so that a read past the name or a
 * reliance on a NUL terminator shows under AddressSanitizer, and checks the answer. */
static void check(const char *p, size_t n, resp_command_id want, const char *label)
{
    char *copy = malloc(n ? n : 1);
    if (copy == NULL) bail_out("out of memory");
    memcpy(copy, p, n);
    resp_arg a = {copy, n};
    const resp_command *c = resp_command_lookup(&a);
    if (!ok(c != NULL && c->id == want, "%s -> %s", label, id_name(want)))
        diag("got %s", c ? id_name(c->id) : "NULL");
    free(copy);
}

/* The name shown in test names: bytes outside printable ASCII as \xHH. */
static const char *show(const char *p, size_t n)
{
    static char out[8][256];
    static int slot;
    char *o = out[slot++ % 8];
    size_t k = 0;
    o[k++] = '"';
    for (size_t i = 0; i < n && k < 240; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') o[k++] = (char)c;
        else k += (size_t)snprintf(o + k, 256 - k, "\\x%02x", c);
    }
    o[k++] = '"';
    o[k] = '\0';
    return o;
}

static void test_table(void)
{
    ok(NTABLE == RESP_COMMAND_COUNT - 1, "this test names every command (%zu)", NTABLE);
    for (int id = 0; id < RESP_COMMAND_COUNT; id++) {
        const resp_command *c = resp_command_get((resp_command_id)id);
        if (id == CMD_OTHER) {
            ok(c->id == CMD_OTHER && c->name && c->name[0] == '\0' && c->len == 0 && c->flags == 0 &&
                   c->keys == RESP_KEYS_NONE,
               "CMD_OTHER: empty name, no flags");
            continue;
        }
        const struct want *w = NULL;
        for (size_t i = 0; i < NTABLE; i++)
            if (table[i].id == (resp_command_id)id) w = &table[i];
        if (!ok(w != NULL && c->id == (resp_command_id)id, "id %d is in the table", id)) continue;
        is_string(c->name, w->name, "%s: name", w->name);
        is_int(c->len, (long long)strlen(w->name), "%s: len", w->name);
        is_int(c->flags, w->flags, "%s: flags", w->name);
        is_int(c->keys, w->keys, "%s: keys", w->name);
    }
    ok(resp_command_get((resp_command_id)-1)->id == CMD_OTHER &&
           resp_command_get((resp_command_id)RESP_COMMAND_COUNT)->id == CMD_OTHER &&
           resp_command_get((resp_command_id)1000)->id == CMD_OTHER,
       "an id out of range gives CMD_OTHER's entry");
}

static void test_names(void)
{
    for (size_t i = 0; i < NTABLE; i++) {
        const char *name = table[i].name;
        size_t n = strlen(name);
        char up[64], mixed[64], other[64];
        for (size_t k = 0; k < n; k++) {
            char c = name[k];
            char u = (char)(c >= 'a' && c <= 'z' ? c - ('a' - 'A') : c);
            up[k] = u;
            mixed[k] = k % 2 ? c : u;
            other[k] = k % 2 ? u : c;
        }
        check(name, n, table[i].id, show(name, n));
        check(up, n, table[i].id, show(up, n));
        check(mixed, n, table[i].id, show(mixed, n));
        check(other, n, table[i].id, show(other, n));

        /* Wrong lengths: one byte short, one byte more, the name twice. */
        char longer[130];
        memcpy(longer, name, n);
        longer[n] = 'x';
        check(name, n - 1, ref_lookup(name, n - 1), show(name, n - 1));
        check(longer, n + 1, ref_lookup(longer, n + 1), show(longer, n + 1));
        memcpy(longer + n, name, n);
        check(longer, 2 * n, ref_lookup(longer, 2 * n), show(longer, 2 * n));

        /* The name followed by a NUL byte, and with its last byte a NUL. */
        memcpy(longer, name, n);
        longer[n] = '\0';
        check(longer, n + 1, CMD_OTHER, show(longer, n + 1));
        longer[n - 1] = '\0';
        check(longer, n, CMD_OTHER, show(longer, n));

        /* Each byte changed to a neighbour that a sloppy fold would accept: c ^ 0x20 of a
         * non-letter ('_' <-> 0x7f), and the letter with its high bit set. */
        for (size_t k = 0; k < n; k++) {
            memcpy(longer, name, n);
            longer[k] = (char)(name[k] ^ 0x20);
            if (name[k] < 'a' || name[k] > 'z') check(longer, n, CMD_OTHER, show(longer, n));
            longer[k] = (char)(name[k] | 0x80);
            check(longer, n, CMD_OTHER, show(longer, n));
        }
    }
}

static void test_near_misses(void)
{
    static const struct {
        const char *p;
        size_t n;
    } misses[] = {
#define M(lit) {lit, sizeof(lit) - 1}
        M(""), M("\0"), M("SETN"), M("SETNXX"), M("SET "), M(" SET"), M("GE"), M("GETT"),
        M("GET\0"), M("G\0T"), M("\0GET"), M("EVAL_R"), M("EVAL-RO"), M("EVAL RO"), M("EVALRO"),
        M("EVALSHA_RO_"), M("EVALSHARO"), M("FCALLRO"), M("EXE"), M("EXECC"), M("MULTI\r\n"),
        M("PIN"), M("PINGS"), M("XREADGROUPS"), M("XREAD_GROUP"), M("BZPOP"), M("BZPOPMINN"),
        M("SUBSCRIBES"), M("UNSUBSCRIB"), M("PUNSUBSCRIBEX"), M("\xc3\x89VAL"), M("get\xff"),
        M("GET\x7f"), M("@ET"), M("[ET"), M("{et"), M("`et"), M("SETEX"), M("MGET"),
        M("COMMAND"), M("AUTH2"), M("WAITAOFX"), M("ABCDEFGHIJKLM"), M("X"),
#undef M
    };
    for (size_t i = 0; i < sizeof misses / sizeof misses[0]; i++)
        check(misses[i].p, misses[i].n, CMD_OTHER, show(misses[i].p, misses[i].n));

    /* Every length from 0 to 40 of one letter repeated: none is a command. */
    char rep[40];
    memset(rep, 'S', sizeof rep);
    int all_other = 1;
    for (size_t n = 0; n <= sizeof rep; n++) {
        resp_arg a = {rep, n};
        if (resp_command_lookup(&a)->id != CMD_OTHER) all_other = 0;
    }
    ok(all_other, "\"S\" repeated 0 to 40 times: CMD_OTHER");

    ok(resp_command_lookup(NULL)->id == CMD_OTHER, "NULL name: CMD_OTHER");
    resp_arg nul = {NULL, 0};
    ok(resp_command_lookup(&nul)->id == CMD_OTHER, "NULL pointer, length 0: CMD_OTHER");
}

/* resp_command_blocks() on an argv given as NUL-terminated words. */
static int blocks(const char *const *words)
{
    resp_arg argv[16];
    int argc = 0;
    for (; words[argc] != NULL; argc++) argv[argc] = (resp_arg){words[argc], strlen(words[argc])};
    return resp_command_blocks(resp_command_lookup(&argv[0]), argc, argv);
}

#define BLOCKS(...) blocks((const char *const[]){__VA_ARGS__, NULL})

static void test_blocking(void)
{
    is_int(BLOCKS("BLPOP", "l", "0"), 1, "BLPOP blocks");
    is_int(BLOCKS("bzmpop", "1", "1", "z", "MIN"), 1, "bzmpop blocks");
    is_int(BLOCKS("WAIT", "1", "0"), 1, "WAIT blocks");
    is_int(BLOCKS("GET", "k"), 0, "GET does not");
    is_int(BLOCKS("SUBSCRIBE", "ch"), 0, "SUBSCRIBE does not (it is pushed replies, not waiting)");
    is_int(BLOCKS("FOO", "block"), 0, "an unknown command does not");
    is_int(BLOCKS("XREAD", "COUNT", "1", "STREAMS", "s", "0"), 0, "XREAD without BLOCK does not");
    is_int(BLOCKS("XREAD", "BLOCK", "0", "STREAMS", "s", "0"), 1, "XREAD BLOCK 0 does");
    is_int(BLOCKS("xread", "count", "1", "block", "100", "streams", "s", "$"), 1, "xread ... block 100 does");
    is_int(BLOCKS("XREAD", "STREAMS", "block", "0"), 0, "a stream named block is not the option");
    is_int(BLOCKS("XREAD", "STREAMS", "s", "block"), 0, "nor an ID after STREAMS");
    is_int(BLOCKS("XREADGROUP", "GROUP", "g", "c", "BLOCK", "10", "STREAMS", "s", ">"), 1,
           "XREADGROUP ... BLOCK 10 does");
    is_int(BLOCKS("XREADGROUP", "GROUP", "g", "c", "NOACK", "STREAMS", "s", ">"), 0,
           "XREADGROUP without BLOCK does not");
    is_int(BLOCKS("XREAD"), 0, "XREAD alone does not");
    ok(resp_command_blocks(NULL, 0, NULL) == 0, "no command: does not block");
}

int main(void)
{
    plan_lazy();
    test_table();
    test_names();
    test_near_misses();
    test_blocking();
    return 0;
}
