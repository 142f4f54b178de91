/* rng_hd.h: the counter-based generator's pure functions (hash of (key, counter), U[0,1) and
 * N(0,1) draws), shared by core/tensor/rng.c and the CUDA kernels: the same seed gives the same
 * numbers on every device. Design notes are at each function. */
#ifndef NL_RNG_HD_H
#define NL_RNG_HD_H

#include "nl_hd.h"

#include <math.h>
#include <stdint.h>

/* Stafford's "mix13" 64-bit finaliser (the one splitmix64 uses): a bijection in which each input
 * bit flips each output bit with probability close to 1/2. */
NL_HD uint64_t nl_hd_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* The key is the seed itself (kernels get op.u[0] = seed), so the hash first expands it: keys 0,
 * 1, 2... become unrelated 64-bit words. Then two rounds: the first spreads the counter (a Weyl
 * step offset by the expanded key), the second mixes in the key again (rotated) so that two keys
 * whose first rounds happen to meet still part. For each key, counter -> hash is a bijection, so
 * a stream never repeats within 2^64 draws. */
NL_HD uint64_t nl_hd_rng_hash(uint64_t key, uint64_t counter)
{
    uint64_t k = nl_hd_mix64(key ^ 0x6a09e667f3bcc909ULL);
    uint64_t x = nl_hd_mix64(counter * 0x9e3779b97f4a7c15ULL + k);
    return nl_hd_mix64(x ^ ((k << 32) | (k >> 32)) ^ 0xd1b54a32d192ed03ULL);
}

/* The top 24 bits, scaled: exactly representable in a float, in [0, 1 - 2^-24]. */
NL_HD float nl_hd_rng_u01(uint64_t key, uint64_t counter)
{
    return (float)(nl_hd_rng_hash(key, counter) >> 40) * 0x1p-24f;
}

/* Box-Muller from two independent hashes of the same counter, under their own key (so that a
 * normal fill at counter c, which consumes two hashes per element, never shares hashes with a
 * uniform fill at nearby counters). u1 lies in (0, 1] (53 bits, never zero, so the log is finite
 * and the tails reach about 8.6 standard deviations); u2 in [0, 1). (Counters c and c + 2^63 give
 * the same number; no stream gets that long.) log and cos are double precision on both sides;
 * CUDA's are within 1-2 ulp of glibc's, far below the float the result is rounded to. */
NL_HD float nl_hd_rng_normal(uint64_t key, uint64_t counter)
{
    uint64_t k = key ^ 0xa54ff53a5f1d36f1ULL;
    double u1 = (double)((nl_hd_rng_hash(k, 2 * counter) >> 11) + 1) * 0x1p-53;
    double u2 = (double)(nl_hd_rng_hash(k, 2 * counter + 1) >> 11) * 0x1p-53;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* Dropout's decision for element k of a fill at (key, counter): kept when its draw is >= p. */
NL_HD int nl_hd_dropout_keep(uint64_t key, uint64_t counter, float p)
{
    return nl_hd_rng_u01(key, counter) >= p;
}

#endif
