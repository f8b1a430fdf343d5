/* Property checks shared by the libFuzzer targets (tests/fuzz/fuzz_*.c, built with clang and
 * -fsanitize=fuzzer,address,undefined by `make fuzz`) and by the corpus replay test
 * (tests/fuzz/replay.t.c, built with gcc by `make test`).
 *
 * Each check takes one input, runs the module on it several ways and compares the results:
 *
 *   lpf_check_request  resp/request.c  byte 0 picks a chunk size and the limits; the rest is
 *                      fed whole, fed in chunks (each call on a fresh exact-size copy, so a
 *                      kept pointer or an over-read shows under ASan) and parsed by a small
 *                      reference model of redis-server's framing written here; all three must
 *                      give the same frames, arguments and error line. Every frame re-encoded
 *                      as a multibulk request must parse back to the same arguments.
 *   lpf_check_reply    resp/reply.c    byte 0 picks a chunk size; whole and chunked scans
 *                      must give the same frames, summaries and error offset; boundaries,
 *                      types and counts must match a recursive RESP3 reference parser; and
 *                      every frame that hiredis's redisReader also accepts must end where it
 *                      ends, with the same type, size, head line and integers.
 *   lpf_check_policy   policy/policy.c no crash; errors name "FILE:LINE: "; a parsed policy
 *                      printed and parsed again gives the same rules and the same text;
 *                      policy_match() is the longest prefix.
 *   lpf_check_config   proxy/config.c  the input as a config file: no crash; errors name the
 *                      file and a line; a loaded config keeps its documented bounds; its
 *                      addresses format and parse back unchanged.
 *
 * A check returns 0 when every property held, or -1 with the reason in lpf_msg.
 *
 * Each check is in its own file (check_request.c, check_reply.c, check_policy.c,
 * check_config.c); what they share is in check_util.h, the registry in checks.c. */
#ifndef LP_FUZZ_CHECKS_H
#define LP_FUZZ_CHECKS_H

#include <stddef.h>
#include <stdint.h>

extern char lpf_msg[1024];

int lpf_check_request(const uint8_t *data, size_t size);
int lpf_check_reply(const uint8_t *data, size_t size);
int lpf_check_policy(const uint8_t *data, size_t size);
int lpf_check_config(const uint8_t *data, size_t size);
/* policy/lockreply.c: the reply Redis sends a lock script (byte 0 picks the decision; see
 * check_lockreply.c) turned into the client's reply: no crash, whole frames, as many as the
 * client's command promises, or a retry with something to send. */
int lpf_check_lockreply(const uint8_t *data, size_t size);

/* The checks by name ("request", "reply", "policy", "config"), for the replay test; NULL
 * when unknown. */
typedef int (*lpf_check_fn)(const uint8_t *data, size_t size);
lpf_check_fn lpf_check_by_name(const char *name);

#endif
