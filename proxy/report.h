/* `lockproxy report [--since DUR] [--json] LOG...`: reads audit logs (JSON Lines, plain or
 * gzip-compressed, rotated or not) and prints true event counts (each line counts for
 * itself, unless it is a rate-limited summary, plus its "suppressed"), grouped by rule, event,
 * key and client IP, with hold times, refused releases and advice drawn from the counts.
 * No libuv: it only reads files. */
#ifndef LP_REPORT_H
#define LP_REPORT_H

#include <stdio.h>

/* Runs the subcommand. argv[0] is "report"; the rest are its flags and files ("-" reads
 * stdin). Writes the report to out and problems to err. Returns the exit status: 0, or 1
 * for a bad flag or a file that cannot be read. Malformed lines are counted and reported,
 * never fatal. now_ms is the wall clock --since counts back from. */
int lp_report_main(int argc, char **argv, FILE *out, FILE *err, long long now_ms);

#endif
