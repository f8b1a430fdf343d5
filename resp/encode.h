/* RESP encoding of the commands and replies the proxy makes itself (a rewritten lock
 * command, a reply rebuilt for the client): a growable byte string and the encoders. */
#ifndef LP_RESP_ENCODE_H
#define LP_RESP_ENCODE_H

#include <stddef.h>

/* A growable byte string, always NUL-terminated past len (not counted). Aborts when out of
 * memory: these strings are small and bounded by the request they come from. */
typedef struct lp_str {
    char *p;
    size_t len, cap;
} lp_str;

void lp_str_add(lp_str *s, const void *p, size_t len);
void lp_str_cstr(lp_str *s, const char *c);
void lp_str_free(lp_str *s);

/* A RESP line: a type byte, a number, CRLF (":1\r\n", "*3\r\n", "$5\r\n"). */
void resp_enc_num(lp_str *s, char type, long long v);
/* A multibulk command: its header, then each argument as a bulk string. */
void resp_enc_head(lp_str *s, int argc);
void resp_enc_arg(lp_str *s, const void *p, size_t len);
void resp_enc_cstr(lp_str *s, const char *c);
void resp_enc_ll(lp_str *s, long long v);
/* A null reply in the client's protocol: "$-1" (RESP2) or "_" (RESP3). */
void resp_enc_null(lp_str *s, int proto);

#endif
