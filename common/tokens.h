/* Tokens and numbers shared by the policy file and the config file: blank-separated words,
 * quoted strings with escapes, "NAME:LINE: message" errors, and DIGITS[UNIT] values. */
#ifndef LP_COMMON_TOKENS_H
#define LP_COMMON_TOKENS_H

#include <stddef.h>
#include <stdio.h>

/* Where a line came from, and where to write an error about it. err has room for errlen
 * bytes (errlen may be 0); line is the 1-based line number. */
typedef struct lp_tok_where { const char *name; int line; char *err; size_t errlen; } lp_tok_where;

/* Writes "NAME:LINE: message" (message formatted from fmt) into w->err, truncated to
 * w->errlen, and returns -1, so that a parser can `return lp_tok_fail(...)`. */
int lp_tok_fail(const lp_tok_where *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Returns nonzero for the blanks that separate tokens: space, \t, \r, \n, \v and \f. */
int lp_tok_is_blank(char ch);

/* Takes the next token of [*p, end) into out (which has room for end - *p bytes) and
 * advances *p. Tokens are separated by blanks; one starting with '"' runs to the closing
 * quote, with \" \\ and \xHH escapes, and must be followed by a blank. A '#' where a token
 * would start begins a comment. out is not NUL-terminated and may contain NUL bytes (from
 * \x00). Returns 1 with the token's length in *len, 0 at the end of the line (*p == end), or
 * -1 with "NAME:LINE: message" (quoting the raw token) in w->err. */
int lp_tok_next(const lp_tok_where *w, const char **p, const char *end, char *out, size_t *len);

/* lp_tok_next() for a token that must not hold a NUL byte (one is an error, "NUL byte in a
 * token"); the token is NUL-terminated in out, which needs one more byte of room. */
int lp_tok_next_word(const lp_tok_where *w, const char **p, const char *end, char *out, size_t *len);

/* Writes s[0..n) as a token that lp_tok_next() reads back as the same bytes: bare when it is
 * not empty and has only printable non-blank bytes (or UTF-8) and no '"', '\\' or '#';
 * quoted otherwise, with \" \\ and \xHH for control bytes. */
void lp_tok_write(FILE *out, const char *s, size_t n);

/* Parses the leading decimal digits of s (at least one). Returns the value, or -1 when there
 * is no digit or it overflows a long long; *rest points past the digits (at s when none). */
long long lp_tok_parse_digits(const char *s, const char **rest);

/* A unit suffix and what it multiplies by. */
typedef struct lp_tok_unit { const char *name; long long mul; } lp_tok_unit;

/* Parses DIGITS[UNIT], the whole of s, where UNIT (case-insensitive) is the name of one of
 * units[0..nunits) ("" allows a bare number). Returns the value times the unit's mul, or -1
 * when malformed, the unit is unknown, or the result overflows a long long. */
long long lp_tok_parse_units(const char *s, const lp_tok_unit *units, size_t nunits);

/* Parses a duration DIGITS[ms|s|m|h] (unit case-insensitive; none means ms). Returns it in
 * milliseconds (0 allowed), or -1 when malformed or too large. */
long long lp_tok_parse_duration_ms(const char *s);

/* lp_tok_parse_duration_ms() where the unit is required: DIGITS(ms|s|m|h). A bare number is
 * -1, as is anything malformed or too large. */
long long lp_tok_parse_duration_unit_ms(const char *s);

#endif
