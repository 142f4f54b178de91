/* rng.c: nnlab's counter-based random numbers: a pure hash of (key, counter), the uniform and
 * normal draws built on it, the one global stream (seed, counter) that fills consume, and the
 * seeded permutations that shuffle data sets. */
#include "nl.h"

#include <math.h>

/* The global stream, seed 0 at start. The REPL runs core on one thread, so a plain static
 * suffices; kernels never touch it: a fill reserves its counters here first and then hands
 * (key, counter) to the backend, where element k (in the tensor's logical row-major order) draws
 * from hash(key, counter + k). That is why results depend only on the seed and never on the
 * thread count or the device. The key is the seed itself: any op that draws numbers (dropout
 * too) takes key = nl_rng_get_state().seed and counter = nl_rng_reserve(numel). */
static nl_rng_state g_state = {0, 0};

/* Stafford's "mix13" 64-bit finaliser (the one splitmix64 uses): a bijection in which each input
 * bit flips each output bit with probability close to 1/2. */
static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Normal draws use their own key, so that a normal fill at counter c (which consumes two hashes
 * per element) never shares hashes with a uniform fill at nearby counters. */
static inline uint64_t normal_key(uint64_t key) { return key ^ 0xa54ff53a5f1d36f1ULL; }

/* The key is the seed itself (kernels get op.u[0] = seed), so the hash first expands it: keys 0,
 * 1, 2... become unrelated 64-bit words. Then two rounds: the first spreads the counter (a Weyl
 * step offset by the expanded key), the second mixes in the key again (rotated) so that two keys
 * whose first rounds happen to meet still part. For each key, counter -> hash is a bijection, so
 * a stream never repeats within 2^64 draws. */
uint64_t nl_rng_hash(uint64_t key, uint64_t counter)
{
    uint64_t k = mix64(key ^ 0x6a09e667f3bcc909ULL);
    uint64_t x = mix64(counter * 0x9e3779b97f4a7c15ULL + k);
    return mix64(x ^ ((k << 32) | (k >> 32)) ^ 0xd1b54a32d192ed03ULL);
}

/* The top 24 bits, scaled: exactly representable in a float, in [0, 1 - 2^-24]. */
float nl_rng_u01_at(uint64_t key, uint64_t counter)
{
    return (float)(nl_rng_hash(key, counter) >> 40) * 0x1p-24f;
}

/* Box-Muller from two independent hashes of the same counter. u1 lies in (0, 1] (53 bits, never
 * zero, so the log is finite and the tails reach about 8.6 standard deviations); u2 in [0, 1).
 * (Counters c and c + 2^63 give the same number; no stream gets that long.) */
float nl_rng_normal_at(uint64_t key, uint64_t counter)
{
    uint64_t k = normal_key(key);
    double u1 = (double)((nl_rng_hash(k, 2 * counter) >> 11) + 1) * 0x1p-53;
    double u2 = (double)(nl_rng_hash(k, 2 * counter + 1) >> 11) * 0x1p-53;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* Restarts the global stream at (seed, counter 0). */
void nl_rng_seed(uint64_t seed)
{
    g_state.seed = seed;
    g_state.counter = 0;
}

/* The stream's position, to save and later restore with nl_rng_set_state (which replays every
 * draw made since, bit for bit). */
nl_rng_state nl_rng_get_state(void) { return g_state; }

void nl_rng_set_state(nl_rng_state s) { g_state = s; }

/* Hands out counters [first, first + n) of the global stream and returns first. */
uint64_t nl_rng_reserve(uint64_t n)
{
    uint64_t first = g_state.counter;
    g_state.counter += n;
    return first;
}

/* Fills dst from the global stream; on failure the stream is left where it was. */
static nl_status rand_fill(const char *fn, nl_opcode code, nl_tensor *dst, double a, double b)
{
    if (!dst) return nl_seterr(NL_EINVAL, "%s: no destination tensor", fn);
    if (dst->dtype != NL_F32)
        return nl_seterr(NL_ETYPE, "%s: needs an f32 tensor, got %s (convert the result to get "
                         "integers)", fn, nl_dtype_info(dst->dtype)->name);
    nl_rng_state saved = g_state;
    nl_op op = {.code = code, .dst = dst, .f = {a, b}};
    op.u[0] = g_state.seed;
    op.u[1] = nl_rng_reserve((uint64_t)nl_tensor_numel(dst));
    nl_status st = nl_op_exec(&op);
    if (st != NL_OK) g_state = saved;
    return st;
}

/* Fills f32 dst (any strides, any device) with U[lo, hi). NL_ETYPE for other dtypes, NL_EINVAL
 * for non-finite bounds or hi < lo. Advances the global stream by numel(dst). */
nl_status nl_rand_uniform(nl_tensor *dst, double lo, double hi)
{
    if (!isfinite(lo) || !isfinite(hi) || hi < lo)
        return nl_seterr(NL_EINVAL, "rand: bounds [%g, %g) are not a range", lo, hi);
    return rand_fill("rand", NL_OP_RAND_UNIFORM, dst, lo, hi);
}

/* Fills f32 dst with N(mean, std^2). NL_ETYPE for other dtypes, NL_EINVAL for a non-finite mean
 * or a negative or non-finite std. Advances the global stream by numel(dst). */
nl_status nl_rand_normal(nl_tensor *dst, double mean, double std)
{
    if (!isfinite(mean) || !isfinite(std) || std < 0)
        return nl_seterr(NL_EINVAL, "randn: mean %g and std %g are not valid (std must be >= 0)",
                         mean, std);
    return rand_fill("randn", NL_OP_RAND_NORMAL, dst, mean, std);
}

/* One U[0, 1) draw (53 bits) from the global stream. */
double nl_rng_uniform01(void)
{
    return (double)(nl_rng_u64() >> 11) * 0x1p-53;
}

/* One 64-bit draw from the global stream. */
uint64_t nl_rng_u64(void)
{
    uint64_t c = nl_rng_reserve(1);
    return nl_rng_hash(g_state.seed, c);
}

nl_status nl_permutation(nl_tensor *dst, uint64_t key)
{
    if (dst->dtype != NL_I32 || dst->ndim != 1 || nl_tensor_device(dst) != NL_CPU ||
        !nl_tensor_is_contiguous(dst) || dst->shape[0] > INT32_MAX)
        return nl_seterr(NL_EINVAL, "permutation: expected a contiguous 1-D i32 CPU tensor");
    int32_t *p = nl_tensor_data(dst);
    int64_t n = dst->shape[0];
    for (int64_t i = 0; i < n; i++) p[i] = (int32_t)i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(nl_rng_hash(key, (uint64_t)i) % (uint64_t)(i + 1));
        int32_t t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
    return NL_OK;
}
