/* The command table: see command.h. */
#include "resp/command.h"

#include <stddef.h>

#define LK CMDF_LOCK_KEY
#define BL CMDF_BLOCKING
#define BM CMDF_BLOCKING_MAYBE
#define AC CMDF_ACCOUNTING
#define NQ CMDF_NO_QUEUE
#define WR CMDF_WRITE

#define C(id, name, flags, keys) [id] = {id, name, sizeof(name) - 1, flags, keys}
static const resp_command commands[RESP_COMMAND_COUNT] = {
    C(CMD_GET, "get", LK, RESP_KEYS_FIRST),
    C(CMD_SET, "set", LK | WR, RESP_KEYS_FIRST),
    C(CMD_SETNX, "setnx", LK | WR, RESP_KEYS_FIRST),
    C(CMD_EXPIRE, "expire", LK | WR, RESP_KEYS_FIRST),
    C(CMD_PEXPIRE, "pexpire", LK | WR, RESP_KEYS_FIRST),
    C(CMD_EXPIREAT, "expireat", LK | WR, RESP_KEYS_FIRST),
    C(CMD_PEXPIREAT, "pexpireat", LK | WR, RESP_KEYS_FIRST),
    C(CMD_PERSIST, "persist", LK | WR, RESP_KEYS_FIRST),
    C(CMD_DEL, "del", LK | WR, RESP_KEYS_ALL),
    C(CMD_UNLINK, "unlink", LK | WR, RESP_KEYS_ALL),
    C(CMD_GETSET, "getset", LK | WR, RESP_KEYS_FIRST),
    C(CMD_GETEX, "getex", LK | WR, RESP_KEYS_FIRST),
    C(CMD_GETDEL, "getdel", LK | WR, RESP_KEYS_FIRST),
    C(CMD_EVAL, "eval", LK | WR, RESP_KEYS_NUMKEYS),
    C(CMD_EVALSHA, "evalsha", LK | WR, RESP_KEYS_NUMKEYS),
    C(CMD_EVAL_RO, "eval_ro", LK, RESP_KEYS_NUMKEYS),
    C(CMD_EVALSHA_RO, "evalsha_ro", LK, RESP_KEYS_NUMKEYS),
    C(CMD_FCALL, "fcall", LK | WR, RESP_KEYS_NUMKEYS),
    C(CMD_FCALL_RO, "fcall_ro", LK, RESP_KEYS_NUMKEYS),
    C(CMD_MULTI, "multi", AC | NQ, RESP_KEYS_NONE),
    C(CMD_EXEC, "exec", AC | NQ, RESP_KEYS_NONE),
    C(CMD_DISCARD, "discard", AC | NQ, RESP_KEYS_NONE),
    C(CMD_WATCH, "watch", NQ, RESP_KEYS_NONE),
    C(CMD_UNWATCH, "unwatch", 0, RESP_KEYS_NONE),
    C(CMD_QUIT, "quit", AC | NQ, RESP_KEYS_NONE),
    C(CMD_RESET, "reset", AC | NQ, RESP_KEYS_NONE),
    C(CMD_HELLO, "hello", AC, RESP_KEYS_NONE),
    C(CMD_AUTH, "auth", AC, RESP_KEYS_NONE),
    C(CMD_SELECT, "select", AC, RESP_KEYS_NONE),
    C(CMD_CLIENT, "client", AC, RESP_KEYS_NONE),
    C(CMD_MONITOR, "monitor", AC, RESP_KEYS_NONE),
    C(CMD_SUBSCRIBE, "subscribe", AC, RESP_KEYS_NONE),
    C(CMD_PSUBSCRIBE, "psubscribe", AC, RESP_KEYS_NONE),
    C(CMD_SSUBSCRIBE, "ssubscribe", AC, RESP_KEYS_NONE),
    C(CMD_UNSUBSCRIBE, "unsubscribe", AC, RESP_KEYS_NONE),
    C(CMD_PUNSUBSCRIBE, "punsubscribe", AC, RESP_KEYS_NONE),
    C(CMD_SUNSUBSCRIBE, "sunsubscribe", AC, RESP_KEYS_NONE),
    C(CMD_SYNC, "sync", AC, RESP_KEYS_NONE),
    C(CMD_PSYNC, "psync", AC, RESP_KEYS_NONE),
    C(CMD_BLPOP, "blpop", BL | WR, RESP_KEYS_NONE),
    C(CMD_BRPOP, "brpop", BL | WR, RESP_KEYS_NONE),
    C(CMD_BRPOPLPUSH, "brpoplpush", BL | WR, RESP_KEYS_NONE),
    C(CMD_BLMOVE, "blmove", BL | WR, RESP_KEYS_NONE),
    C(CMD_BLMPOP, "blmpop", BL | WR, RESP_KEYS_NONE),
    C(CMD_BZPOPMIN, "bzpopmin", BL | WR, RESP_KEYS_NONE),
    C(CMD_BZPOPMAX, "bzpopmax", BL | WR, RESP_KEYS_NONE),
    C(CMD_BZMPOP, "bzmpop", BL | WR, RESP_KEYS_NONE),
    C(CMD_WAIT, "wait", BL, RESP_KEYS_NONE),
    C(CMD_WAITAOF, "waitaof", BL, RESP_KEYS_NONE),
    C(CMD_XREAD, "xread", BM, RESP_KEYS_NONE),
    C(CMD_XREADGROUP, "xreadgroup", BM | WR, RESP_KEYS_NONE),
    C(CMD_CONFIG, "config", 0, RESP_KEYS_NONE),
    C(CMD_ACL, "acl", 0, RESP_KEYS_NONE),
    C(CMD_PING, "ping", 0, RESP_KEYS_NONE),
    C(CMD_OTHER, "", 0, RESP_KEYS_NONE),
};
#undef C

/* The n bytes at p equal the lower-case word w (n bytes) with ASCII letters folded. Only
 * 'A'..'Z' fold: every other byte, NUL and non-ASCII included, must match exactly. */
static inline int fold_eq(const char *p, const char *w, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 'A' && c <= 'Z') c = (unsigned char)(c + ('a' - 'A'));
        if (c != (unsigned char)w[i]) return 0;
    }
    return 1;
}

/* Within one length, tries the candidates in turn; the first byte differs between most of
 * them, so a miss usually costs one compare. */
#define TRY(id)                                                                                \
    do {                                                                                       \
        if (fold_eq(p, commands[id].name, n)) return &commands[id];                           \
    } while (0)

const resp_command *resp_command_lookup(const resp_arg *name)
{
    if (name == NULL || name->ptr == NULL) return &commands[CMD_OTHER];
    const char *p = name->ptr;
    size_t n = name->len;
    switch (n) {
    case 3:
        TRY(CMD_GET);
        TRY(CMD_SET);
        TRY(CMD_DEL);
        TRY(CMD_ACL);
        break;
    case 4:
        TRY(CMD_EVAL);
        TRY(CMD_EXEC);
        TRY(CMD_QUIT);
        TRY(CMD_AUTH);
        TRY(CMD_PING);
        TRY(CMD_SYNC);
        TRY(CMD_WAIT);
        break;
    case 5:
        TRY(CMD_SETNX);
        TRY(CMD_GETEX);
        TRY(CMD_FCALL);
        TRY(CMD_MULTI);
        TRY(CMD_WATCH);
        TRY(CMD_RESET);
        TRY(CMD_HELLO);
        TRY(CMD_PSYNC);
        TRY(CMD_BLPOP);
        TRY(CMD_BRPOP);
        TRY(CMD_XREAD);
        break;
    case 6:
        TRY(CMD_EXPIRE);
        TRY(CMD_UNLINK);
        TRY(CMD_GETSET);
        TRY(CMD_GETDEL);
        TRY(CMD_SELECT);
        TRY(CMD_CLIENT);
        TRY(CMD_CONFIG);
        TRY(CMD_BLMOVE);
        TRY(CMD_BLMPOP);
        TRY(CMD_BZMPOP);
        break;
    case 7:
        TRY(CMD_PEXPIRE);
        TRY(CMD_PERSIST);
        TRY(CMD_EVALSHA);
        TRY(CMD_EVAL_RO);
        TRY(CMD_DISCARD);
        TRY(CMD_UNWATCH);
        TRY(CMD_MONITOR);
        TRY(CMD_WAITAOF);
        break;
    case 8:
        TRY(CMD_EXPIREAT);
        TRY(CMD_FCALL_RO);
        TRY(CMD_BZPOPMIN);
        TRY(CMD_BZPOPMAX);
        break;
    case 9:
        TRY(CMD_PEXPIREAT);
        TRY(CMD_SUBSCRIBE);
        break;
    case 10:
        TRY(CMD_EVALSHA_RO);
        TRY(CMD_PSUBSCRIBE);
        TRY(CMD_SSUBSCRIBE);
        TRY(CMD_BRPOPLPUSH);
        TRY(CMD_XREADGROUP);
        break;
    case 11:
        TRY(CMD_UNSUBSCRIBE);
        break;
    case 12:
        TRY(CMD_PUNSUBSCRIBE);
        TRY(CMD_SUNSUBSCRIBE);
        break;
    default:
        break;
    }
    return &commands[CMD_OTHER];
}
#undef TRY

const resp_command *resp_command_get(resp_command_id id)
{
    if ((unsigned)id >= RESP_COMMAND_COUNT) id = CMD_OTHER;
    return &commands[id];
}

int resp_command_blocks(const resp_command *c, int argc, const resp_arg *argv)
{
    if (c == NULL) return 0;
    if (c->flags & CMDF_BLOCKING) return 1;
    if (!(c->flags & CMDF_BLOCKING_MAYBE)) return 0;
    /* XREAD [COUNT n] [BLOCK ms] STREAMS ..., XREADGROUP GROUP g c [COUNT n] [BLOCK ms]
     * [NOACK] STREAMS ...: what follows STREAMS is keys and IDs. A group or consumer named
     * "block" counts too; that errs on the side of blocking. */
    for (int i = 1; i < argc; i++) {
        if (resp_arg_is(&argv[i], "streams")) break;
        if (resp_arg_is(&argv[i], "block")) return 1;
    }
    return 0;
}
