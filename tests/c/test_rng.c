/* test_rng.c: the counter-based RNG: determinism across runs, seeds and thread counts, state
 * save/restore, the element-k-uses-counter+k contract, and statistical sanity of the draws. */
#include "nl.h"
#include "testhelp.h"

#include <string.h>

#define N_BIG 1000000

static nl_tensor *vec(int64_t n)
{
    return nl_tensor_empty(NL_F32, 1, &n, NL_CPU);
}

/* A new tensor of n draws: U[lo, hi) when normal is false, else N(lo, hi^2). */
static nl_tensor *draw(int64_t n, bool normal, double a, double b)
{
    nl_tensor *t = vec(n);
    nl_status st = normal ? nl_rand_normal(t, a, b) : nl_rand_uniform(t, a, b);
    CHECK(st == NL_OK, "fill failed: %s", nl_errmsg());
    return t;
}

static bool same_bits(const nl_tensor *a, const nl_tensor *b)
{
    return nl_tensor_numel(a) == nl_tensor_numel(b) &&
           !memcmp(nl_tensor_data(a), nl_tensor_data(b), (size_t)nl_tensor_numel(a) * sizeof(float));
}

static void mean_var(const nl_tensor *t, double *mean, double *var)
{
    const float *p = nl_tensor_f32(t);
    int64_t n = nl_tensor_numel(t);
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < n; i++) s += p[i];
    *mean = s / (double)n;
    for (int64_t i = 0; i < n; i++) s2 += (p[i] - *mean) * (p[i] - *mean);
    *var = s2 / (double)(n - 1);
}

/* Pearson correlation of x[i] and y[i + lag]. */
static double correlation(const float *x, const float *y, int64_t n, int lag)
{
    double mx = 0, my = 0, sxy = 0, sxx = 0, syy = 0;
    int64_t m = n - lag;
    for (int64_t i = 0; i < m; i++) mx += x[i], my += y[i + lag];
    mx /= (double)m, my /= (double)m;
    for (int64_t i = 0; i < m; i++) {
        double dx = x[i] - mx, dy = y[i + lag] - my;
        sxy += dx * dy, sxx += dx * dx, syy += dy * dy;
    }
    return sxy / sqrt(sxx * syy);
}

static void test_default_state(void)
{
    nl_rng_state s = nl_rng_get_state();
    CHECK(s.seed == 0 && s.counter == 0, "the stream starts at seed 0, counter 0 (got %llu, %llu)",
          (unsigned long long)s.seed, (unsigned long long)s.counter);
}

static void test_pure_functions(void)
{
    CHECK(nl_rng_hash(1, 2) == nl_rng_hash(1, 2), "hash is a function");
    CHECK(nl_rng_hash(1, 2) != nl_rng_hash(2, 1), "hash is not symmetric in key and counter");
    CHECK(nl_rng_hash(0, 0) != 0, "hash(0, 0) is not 0");
    float lo = 1, hi = 0;
    bool finite = true;
    for (uint64_t c = 0; c < 100000; c++) {
        float u = nl_rng_u01_at(9, c);
        lo = u < lo ? u : lo, hi = u > hi ? u : hi;
        float z = nl_rng_normal_at(9, c);
        finite = finite && isfinite(z);
        /* top-24-bit property: u * 2^24 is an integer */
        if (u * 16777216.0f != floorf(u * 16777216.0f)) finite = false;
    }
    CHECK(lo >= 0 && hi < 1, "u01 in [0, 1): min %g max %.9g", lo, hi);
    CHECK(lo < 1e-4 && hi > 1 - 1e-4, "u01 covers the range: min %g max %.9g", lo, hi);
    CHECK(finite, "normal draws are finite and u01 draws are multiples of 2^-24");
    /* Extreme counters (2c overflows in the normal draw) still give finite numbers. */
    CHECK(isfinite(nl_rng_normal_at(5, UINT64_MAX)) && isfinite(nl_rng_normal_at(5, UINT64_MAX / 2 + 1)),
          "normal at huge counters is finite");

    /* Bits of the raw hash: each of 64 bits set about half the time over 2^20 counters. */
    int64_t ones[64] = {0};
    const int n = 1 << 20;
    for (int c = 0; c < n; c++) {
        uint64_t h = nl_rng_hash(123, (uint64_t)c);
        for (int b = 0; b < 64; b++) ones[b] += (h >> b) & 1;
    }
    double worst = 0;
    for (int b = 0; b < 64; b++) {
        double z = fabs((double)ones[b] - n / 2.0) / (sqrt((double)n) / 2);
        worst = z > worst ? z : worst;
    }
    CHECK(worst < 5, "every hash bit is balanced (worst bit %.2f sigma off)", worst);

    /* Avalanche: flipping one counter bit flips about half of the output bits. */
    double flips = 0;
    int trials = 0;
    for (uint64_t c = 0; c < 2000; c++)
        for (int b = 0; b < 64; b += 7, trials++)
            flips += __builtin_popcountll(nl_rng_hash(77, c) ^ nl_rng_hash(77, c ^ (1ULL << b)));
    CHECK_CLOSE(flips / trials, 32, 0.5, 0);
    flips = trials = 0;
    for (uint64_t k = 0; k < 2000; k++)
        for (int b = 0; b < 64; b += 7, trials++)
            flips += __builtin_popcountll(nl_rng_hash(k, 5) ^ nl_rng_hash(k ^ (1ULL << b), 5));
    CHECK_CLOSE(flips / trials, 32, 0.5, 0);
}

static void test_determinism(void)
{
    nl_rng_seed(42);
    nl_tensor *a = draw(1000, false, 0, 1), *an = draw(1000, true, 0, 1);
    nl_rng_seed(42);
    nl_tensor *b = draw(1000, false, 0, 1), *bn = draw(1000, true, 0, 1);
    CHECK(same_bits(a, b), "same seed, same uniform numbers");
    CHECK(same_bits(an, bn), "same seed, same normal numbers");
    CHECK(!same_bits(a, an), "the stream moves on between fills");

    nl_rng_seed(43);
    nl_tensor *c = draw(1000, false, 0, 1);
    int equal = 0;
    for (int i = 0; i < 1000; i++) equal += nl_tensor_f32(a)[i] == nl_tensor_f32(c)[i];
    CHECK(equal < 5, "seeds 42 and 43 differ (%d of 1000 equal)", equal);

    /* Element k of the first fill after seeding uses counter k, in logical row-major order even
     * for a transposed destination. */
    nl_rng_seed(7);
    nl_tensor *d = draw(100, false, -1, 3);
    bool match = true;
    for (int k = 0; k < 100; k++)
        match = match && fabsf(nl_tensor_f32(d)[k] - (-1 + 4 * nl_rng_u01_at(7, (uint64_t)k))) < 1e-6f;
    CHECK(match, "uniform element k = lo + (hi - lo) * u01_at(seed, counter + k)");
    CHECK(nl_rng_get_state().counter == 100, "a fill of 100 advances the counter by 100");
    int64_t shape[2] = {3, 4};
    nl_tensor *m = nl_tensor_zeros(NL_F32, 2, shape, NL_CPU);
    nl_tensor *mt = nl_tensor_transpose(m, 0, 1); /* 4 x 3 view */
    nl_rng_state before = nl_rng_get_state();
    CHECK(nl_rand_normal(mt, 0, 1) == NL_OK, "normal fill of a view: %s", nl_errmsg());
    match = true;
    for (int64_t i = 0; i < 4; i++)
        for (int64_t j = 0; j < 3; j++) {
            int64_t idx[2] = {i, j};
            double v = 0;
            nl_tensor_get(mt, idx, &v);
            float want = nl_rng_normal_at(before.seed, before.counter + (uint64_t)(i * 3 + j));
            match = match && fabs(v - want) < 1e-6;
        }
    CHECK(match, "a strided fill follows the view's logical order");
    nl_tensor_release(mt);
    nl_tensor_release(m);

    nl_tensor *arr[] = {a, an, b, bn, c, d};
    for (size_t i = 0; i < sizeof arr / sizeof *arr; i++) nl_tensor_release(arr[i]);
}

static void test_threads(void)
{
    int saved = nl_get_threads();
    nl_tensor *u[2], *z[2];
    for (int i = 0; i < 2; i++) {
        nl_set_threads(i + 1);
        nl_rng_seed(2024);
        u[i] = draw(N_BIG, false, -5, 5);
        z[i] = draw(N_BIG, true, 1, 2);
    }
    nl_set_threads(saved);
    CHECK(same_bits(u[0], u[1]), "uniform fill is the same with 1 and 2 threads");
    CHECK(same_bits(z[0], z[1]), "normal fill is the same with 1 and 2 threads");
    for (int i = 0; i < 2; i++) nl_tensor_release(u[i]), nl_tensor_release(z[i]);
}

static void test_state(void)
{
    nl_rng_seed(5);
    nl_rng_u64();
    nl_rng_state s = nl_rng_get_state();
    CHECK(s.seed == 5 && s.counter == 1, "state after one scalar draw");
    nl_tensor *a = draw(500, true, 0, 1);
    uint64_t x = nl_rng_u64();
    double y = nl_rng_uniform01();
    nl_rng_set_state(s);
    nl_tensor *b = draw(500, true, 0, 1);
    CHECK(same_bits(a, b), "restoring the state replays the fill");
    CHECK(nl_rng_u64() == x && nl_rng_uniform01() == y, "and the scalar draws after it");
    nl_tensor_release(a);
    nl_tensor_release(b);

    nl_rng_seed(1);
    uint64_t c0 = nl_rng_reserve(10), c1 = nl_rng_reserve(3);
    CHECK(c0 == 0 && c1 == 10 && nl_rng_get_state().counter == 13, "reserve hands out counters");

    double s1 = 0;
    bool in_range = true;
    for (int i = 0; i < 100000; i++) {
        double v = nl_rng_uniform01();
        in_range = in_range && v >= 0 && v < 1;
        s1 += v;
    }
    CHECK(in_range, "uniform01 in [0, 1)");
    CHECK_CLOSE(s1 / 100000, 0.5, 0.005, 0);
}

static void test_errors(void)
{
    int64_t n = 4;
    nl_tensor *i32 = nl_tensor_zeros(NL_I32, 1, &n, NL_CPU);
    nl_tensor *f = vec(4);
    nl_rng_seed(3);
    nl_rng_state s = nl_rng_get_state();
    CHECK(nl_rand_uniform(i32, 0, 1) == NL_ETYPE, "uniform needs f32");
    CHECK(strstr(nl_errmsg(), "i32") != NULL, "message names the dtype: %s", nl_errmsg());
    CHECK(nl_rand_normal(i32, 0, 1) == NL_ETYPE, "normal needs f32");
    CHECK(nl_rand_normal(f, 0, -1) == NL_EINVAL, "negative std");
    CHECK(nl_rand_normal(f, NAN, 1) == NL_EINVAL, "NaN mean");
    CHECK(nl_rand_uniform(f, 2, 1) == NL_EINVAL, "hi < lo");
    CHECK(nl_rand_uniform(f, 0, INFINITY) == NL_EINVAL, "infinite bound");
    CHECK(nl_rand_uniform(NULL, 0, 1) == NL_EINVAL, "no tensor");
    CHECK(nl_rng_get_state().counter == s.counter, "failed fills do not move the stream");
    nl_interrupt();
    nl_status st = nl_rand_uniform(f, 0, 1);
    nl_interrupt_clear();
    if (st != NL_OK) CHECK(nl_rng_get_state().counter == s.counter, "an interrupted fill does not move the stream");
    nl_tensor_release(i32);
    nl_tensor_release(f);
}

static void test_uniform_stats(void)
{
    nl_rng_seed(11);
    const double lo = -2, hi = 3;
    nl_tensor *t = draw(N_BIG, false, lo, hi);
    const float *p = nl_tensor_f32(t);
    bool in_range = true;
    for (int i = 0; i < N_BIG; i++) in_range = in_range && p[i] >= lo && p[i] < hi;
    CHECK(in_range, "uniform draws in [lo, hi)");
    double mean, var;
    mean_var(t, &mean, &var);
    /* standard errors: mean 5/sqrt(12e6) = 0.0014, var about 0.0019 */
    CHECK_CLOSE(mean, 0.5, 0.008, 0);
    CHECK_CLOSE(var, 25.0 / 12, 0.012, 0);
    double c1 = correlation(p, p, N_BIG, 1), c2 = correlation(p, p, N_BIG, 2);
    CHECK(fabs(c1) < 0.005 && fabs(c2) < 0.005, "no correlation between neighbours (%g, %g)", c1, c2);

    /* Chi-square over 100 equal buckets: 99 degrees of freedom, mean 99, sd 14. */
    enum { B = 100 };
    double count[B] = {0};
    for (int i = 0; i < N_BIG; i++) {
        int k = (int)((p[i] - lo) / (hi - lo) * B);
        count[k < B ? k : B - 1]++;
    }
    double chi2 = 0, e = (double)N_BIG / B;
    for (int k = 0; k < B; k++) chi2 += (count[k] - e) * (count[k] - e) / e;
    CHECK(chi2 < 99 + 5 * 14 && chi2 > 99 - 5 * 14, "uniform chi-square %.1f with 99 dof", chi2);

    /* Neighbouring seeds give uncorrelated streams. */
    nl_rng_seed(12);
    nl_tensor *t2 = draw(N_BIG, false, lo, hi);
    double cs = correlation(p, nl_tensor_f32(t2), N_BIG, 0);
    CHECK(fabs(cs) < 0.005, "seeds 11 and 12 are uncorrelated (%g)", cs);
    nl_tensor_release(t2);
    nl_tensor_release(t);
}

static void test_normal_stats(void)
{
    nl_rng_seed(99);
    nl_tensor *t = draw(N_BIG, true, 1.5, 2);
    double mean, var;
    mean_var(t, &mean, &var);
    CHECK_CLOSE(mean, 1.5, 0.01, 0);   /* se 0.002 */
    CHECK_CLOSE(sqrt(var), 2, 0.01, 0); /* se 0.0014 */
    const float *p = nl_tensor_f32(t);
    double c1 = correlation(p, p, N_BIG, 1);
    CHECK(fabs(c1) < 0.005, "no correlation between neighbours (%g)", c1);

    /* Chi-square over 50 equiprobable buckets of the normal CDF; tails and kurtosis. */
    enum { B = 50 };
    double count[B] = {0}, m4 = 0;
    int beyond3 = 0;
    for (int i = 0; i < N_BIG; i++) {
        double z = (p[i] - 1.5) / 2;
        double cdf = 0.5 * erfc(-z / sqrt(2));
        int k = (int)(cdf * B);
        count[k < B ? k : B - 1]++;
        m4 += z * z * z * z;
        beyond3 += fabs(z) > 3;
    }
    double chi2 = 0, e = (double)N_BIG / B;
    for (int k = 0; k < B; k++) chi2 += (count[k] - e) * (count[k] - e) / e;
    CHECK(chi2 < 49 + 5 * 10 && chi2 > 49 - 5 * 10, "normal chi-square %.1f with 49 dof", chi2);
    CHECK_CLOSE(m4 / N_BIG, 3, 0.05, 0);
    CHECK(beyond3 > 2300 && beyond3 < 3100, "%d of 1M beyond 3 sigma (expected 2700)", beyond3);
    nl_tensor_release(t);
}

int main(void)
{
    nl_init();
    test_default_state();
    test_pure_functions();
    test_determinism();
    test_threads();
    test_state();
    test_errors();
    test_uniform_stats();
    test_normal_stats();
    return TEST_REPORT();
}
