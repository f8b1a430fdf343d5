/* 64-bit FNV-1a, for hash tables and fingerprints of byte strings. Start from
 * LP_FNV1A_OFFSET (xor a seed into it where the input comes from clients) and chain calls to
 * hash several pieces. Not a cryptographic hash. */
#ifndef LP_COMMON_HASH_H
#define LP_COMMON_HASH_H

#include <stddef.h>
#include <stdint.h>

#define LP_FNV1A_OFFSET 0xcbf29ce484222325ULL
#define LP_FNV1A_PRIME 0x100000001b3ULL

/* h updated with the n bytes at p. */
static inline uint64_t lp_fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * LP_FNV1A_PRIME;
    return h;
}

#endif
