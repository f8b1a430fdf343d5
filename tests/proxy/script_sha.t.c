/* The proxy's Lua scripts against a real redis-server: for every script of policy/lua/
 * (the table lp_lua_scripts of the generated header, so a new script is covered without
 * touching this file), SCRIPT LOAD of the compiled-in text answers the SHA-1 the build
 * computed, which is the name lock.c sends with EVALSHA; and the compiled-in text is the
 * .lua file byte for byte. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/harness.h"
#include "policy/lua_scripts.h"

/* Reads LOCKPROXY_SRC/policy/lua/NAME.lua into out. Returns 0 or -1 (errno set). */
static int read_script_file(const char *name, hp_buf *out)
{
    char path[4096], chunk[4096];
    snprintf(path, sizeof path, "%s/policy/lua/%s.lua", LOCKPROXY_SRC, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) return -1;
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) hp_buf_append(out, chunk, n);
    int bad = ferror(f);
    fclose(f);
    return bad ? -1 : 0;
}

int main(void)
{
    size_t nscripts = sizeof lp_lua_scripts / sizeof lp_lua_scripts[0];
    plan_lazy();
    ok(nscripts == LP_LUA_NSCRIPTS && nscripts >= 2, "%zu scripts in the generated table", nscripts);

    hp_proc *r = hp_redis_start(NULL);
    for (size_t i = 0; i < nscripts; i++) {
        const lp_lua_script *s = &lp_lua_scripts[i];

        hp_buf file = {0};
        if (read_script_file(s->name, &file) < 0)
            ok(0, "%s.lua: cannot read: %s", s->name, strerror(errno));
        else
            is_bytes(s->text, s->len, file.data, file.len, "%s.lua: compiled in byte for byte", s->name);
        hp_buf_free(&file);
        is_int((long long)strlen(s->text), (long long)s->len, "%s.lua: no NUL byte (used as a C string)",
               s->name);

        redisReply *rep = hp_cmd(r, "SCRIPT LOAD %b", s->text, s->len);
        ok(rep != NULL && rep->type == REDIS_REPLY_STRING, "%s.lua: SCRIPT LOAD answers a digest",
           s->name);
        is_string(rep && rep->type == REDIS_REPLY_STRING ? rep->str : "(none)", s->sha,
                  "%s.lua: it is the SHA-1 computed at build time", s->name);
        if (rep) freeReplyObject(rep);

        rep = hp_cmd(r, "SCRIPT EXISTS %s", s->sha);
        ok(rep != NULL && rep->type == REDIS_REPLY_ARRAY && rep->elements == 1 &&
               rep->element[0]->type == REDIS_REPLY_INTEGER && rep->element[0]->integer == 1,
           "%s.lua: EVALSHA can name it by that digest (SCRIPT EXISTS)", s->name);
        if (rep) freeReplyObject(rep);
    }
    hp_stop(r, 10000);
    return 0;
}
