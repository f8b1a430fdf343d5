/* The commands the proxy treats specially, by name: an id and what the proxy needs to know
 * about each (whether it may name a lock key, block, change how replies are counted, be
 * queued by MULTI, write). Every other name is CMD_OTHER.
 *
 * Lookup is by the command's name as the client sent it (argv[0]): ASCII case-insensitive,
 * binary-safe (the name's bytes and length, no NUL terminator needed; a NUL byte never
 * matches), without allocation. */
#ifndef LP_RESP_COMMAND_H
#define LP_RESP_COMMAND_H

#include "resp/request.h"

typedef enum resp_command_id {
    CMD_GET,
    CMD_SET,
    CMD_SETNX,
    CMD_EXPIRE,
    CMD_PEXPIRE,
    CMD_EXPIREAT,
    CMD_PEXPIREAT,
    CMD_PERSIST,
    CMD_DEL,
    CMD_UNLINK,
    CMD_GETSET,
    CMD_GETEX,
    CMD_GETDEL,
    CMD_EVAL,
    CMD_EVALSHA,
    CMD_EVAL_RO,
    CMD_EVALSHA_RO,
    CMD_FCALL,
    CMD_FCALL_RO,
    CMD_MULTI,
    CMD_EXEC,
    CMD_DISCARD,
    CMD_WATCH,
    CMD_UNWATCH,
    CMD_QUIT,
    CMD_RESET,
    CMD_HELLO,
    CMD_AUTH,
    CMD_SELECT,
    CMD_CLIENT,
    CMD_MONITOR,
    CMD_SUBSCRIBE,
    CMD_PSUBSCRIBE,
    CMD_SSUBSCRIBE,
    CMD_UNSUBSCRIBE,
    CMD_PUNSUBSCRIBE,
    CMD_SUNSUBSCRIBE,
    CMD_SYNC,
    CMD_PSYNC,
    CMD_BLPOP,
    CMD_BRPOP,
    CMD_BRPOPLPUSH,
    CMD_BLMOVE,
    CMD_BLMPOP,
    CMD_BZPOPMIN,
    CMD_BZPOPMAX,
    CMD_BZMPOP,
    CMD_WAIT,
    CMD_WAITAOF,
    CMD_XREAD,
    CMD_XREADGROUP,
    CMD_CONFIG,
    CMD_ACL,
    CMD_PING,
    CMD_OTHER                    /* any other name; always last */
} resp_command_id;

#define RESP_COMMAND_COUNT (CMD_OTHER + 1)

/* Flags of a command. */
enum {
    /* It may name a lock key: its keys field says where its keys are. */
    CMDF_LOCK_KEY = 1 << 0,
    /* It may wait on other clients when not inside MULTI (BLPOP and friends, WAIT). */
    CMDF_BLOCKING = 1 << 1,
    /* It blocks only when given the BLOCK option (XREAD, XREADGROUP): see
     * resp_command_blocks(). Such commands do not have CMDF_BLOCKING. */
    CMDF_BLOCKING_MAYBE = 1 << 2,
    /* It changes how the replies that follow are counted: transactions (MULTI, EXEC,
     * DISCARD), the end of the connection (QUIT, RESET), protocol and connection state
     * (HELLO, CLIENT, AUTH, SELECT), pushed replies (MONITOR, the (P|S)(UN)SUBSCRIBE
     * family) and replication streams (SYNC, PSYNC). */
    CMDF_ACCOUNTING = 1 << 3,
    /* Inside MULTI it runs at once instead of being queued (+QUEUED): EXEC, DISCARD, MULTI,
     * WATCH, QUIT, RESET. */
    CMDF_NO_QUEUE = 1 << 4,
    /* It may change the dataset (Redis's "write" flag; EVAL, EVALSHA and FCALL too, as
     * their scripts may, but not their _RO forms). */
    CMDF_WRITE = 1 << 5,
};

/* Where a CMDF_LOCK_KEY command names its keys. */
typedef enum resp_command_keys {
    RESP_KEYS_NONE,              /* no keys */
    RESP_KEYS_FIRST,             /* argv[1] */
    RESP_KEYS_ALL,               /* argv[1..argc) (DEL, UNLINK) */
    RESP_KEYS_NUMKEYS            /* argv[2] is numkeys, the keys follow it (EVAL, FCALL) */
} resp_command_keys;

typedef struct resp_command {
    resp_command_id id;
    const char *name;            /* lower case, NUL-terminated; "" for CMD_OTHER */
    unsigned len;                /* strlen(name) */
    unsigned flags;              /* CMDF_* */
    resp_command_keys keys;
} resp_command;

/* The command named by name (ASCII case-insensitive), or CMD_OTHER's entry for any other
 * name, an empty one, or NULL. Never returns NULL. */
const resp_command *resp_command_lookup(const resp_arg *name);

/* The entry of id; CMD_OTHER's for an id out of range. Never returns NULL. */
const resp_command *resp_command_get(resp_command_id id);

/* 1 when the request argv[0..argc) of command c may block: c has CMDF_BLOCKING, or it has
 * CMDF_BLOCKING_MAYBE and its options (the arguments before STREAMS) include BLOCK. */
int resp_command_blocks(const resp_command *c, int argc, const resp_arg *argv);

#endif
