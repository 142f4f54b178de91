/* rng.c: nnlab's counter-based random numbers: a pure hash of (key, counter), the uniform and
 * normal draws built on it, the one global stream (seed, counter) that fills consume, and the
 * seeded permutations that shuffle data sets. */
#include "nl.h"
#include "rng_hd.h"

#include <math.h>

/* The global stream, seed 0 at start. The REPL runs core on one thread, so a plain static
 * suffices; kernels never touch it: a fill reserves its counters here first and then hands
 * (key, counter) to the backend, where element k (in the tensor's logical row-major order) draws
 * from hash(key, counter + k). That is why results depend only on the seed and never on the
 * thread count or the device. The key is the seed itself: any op that draws numbers (dropout
 * too) takes key = nl_rng_get_state().seed and counter = nl_rng_reserve(numel). */
static nl_rng_state g_state = {0, 0};

/* The pure functions live in rng_hd.h, shared with the CUDA kernels. */
uint64_t nl_rng_hash(uint64_t key, uint64_t counter) { return nl_hd_rng_hash(key, counter); }

float nl_rng_u01_at(uint64_t key, uint64_t counter) { return nl_hd_rng_u01(key, counter); }

float nl_rng_normal_at(uint64_t key, uint64_t counter) { return nl_hd_rng_normal(key, counter); }

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
