/* RESP encoding: see encode.h. */
#include "resp/encode.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void lp_str_add(lp_str *s, const void *p, size_t len)
{
    if (s->len + len + 1 > s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 128;
        while (ncap < s->len + len + 1) ncap *= 2;
        char *np = realloc(s->p, ncap);
        if (np == NULL) abort();
        s->p = np;
        s->cap = ncap;
    }
    if (len > 0) memcpy(s->p + s->len, p, len);
    s->len += len;
    s->p[s->len] = '\0';
}

void lp_str_cstr(lp_str *s, const char *c) { lp_str_add(s, c, strlen(c)); }

void lp_str_free(lp_str *s)
{
    free(s->p);
    s->p = NULL;
    s->len = s->cap = 0;
}

void resp_enc_num(lp_str *s, char type, long long v)
{
    char b[32];
    int n = snprintf(b, sizeof(b), "%c%lld\r\n", type, v);
    lp_str_add(s, b, (size_t)n);
}

void resp_enc_head(lp_str *s, int argc) { resp_enc_num(s, '*', argc); }

void resp_enc_arg(lp_str *s, const void *p, size_t len)
{
    resp_enc_num(s, '$', (long long)len);
    lp_str_add(s, p, len);
    lp_str_add(s, "\r\n", 2);
}

void resp_enc_cstr(lp_str *s, const char *c) { resp_enc_arg(s, c, strlen(c)); }

void resp_enc_ll(lp_str *s, long long v)
{
    char b[32];
    int n = snprintf(b, sizeof(b), "%lld", v);
    resp_enc_arg(s, b, (size_t)n);
}

void resp_enc_null(lp_str *s, int proto) { lp_str_cstr(s, proto == 3 ? "_\r\n" : "$-1\r\n"); }
