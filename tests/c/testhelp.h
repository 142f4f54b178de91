/* testhelp.h: a tiny test harness (after Redis's testhelp.h). Each test binary ends with
 * TEST_REPORT(), which prints "N passed, N failed" (", N skipped" when SKIP was used) and returns
 * non-zero on any failure. */
#ifndef NL_TESTHELP_H
#define NL_TESTHELP_H

#include <math.h>
#include <stdio.h>

static int test_passed, test_failed;

/* Records one check; prints the failing expression with its location. */
#define CHECK(cond, ...) do { \
    if (cond) { test_passed++; } \
    else { test_failed++; printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
           printf(__VA_ARGS__); printf("\n"); } } while (0)

/* |a-b| <= atol + rtol*|b| */
#define CHECK_CLOSE(a, b, atol, rtol) do { double a_ = (a), b_ = (b); \
    CHECK(fabs(a_ - b_) <= (atol) + (rtol) * fabs(b_), "%s = %.9g, expected %.9g", #a, a_, b_); } while (0)

/* Records a check that cannot run here, with the reason: "SKIP what: reason". tests/run.sh counts
 * these lines and lists them above its totals. */
static int test_skipped;
#define SKIP(...) do { test_skipped++; printf("SKIP "); printf(__VA_ARGS__); printf("\n"); } while (0)

#define TEST_REPORT() (test_skipped ? printf("%d passed, %d failed, %d skipped\n", test_passed, test_failed, \
                                             test_skipped) \
                                    : printf("%d passed, %d failed\n", test_passed, test_failed), \
                       test_failed != 0)

#endif
