/* window.h: geometry shared by the CPU's sliding-window kernels (convolution and pooling): output
 * position o reads input position o*s - p + kk for a window offset kk. */
#ifndef NL_CPU_WINDOW_H
#define NL_CPU_WINDOW_H

#include <stdint.h>

/* The outputs o in [*lo, *hi) whose input position o*s - p + kk falls inside [0, n_in). */
static inline void cpu_window_range(int64_t n_out, int64_t n_in, int64_t s, int64_t p, int64_t kk,
                                    int64_t *lo, int64_t *hi)
{
    int64_t l = p > kk ? (p - kk + s - 1) / s : 0, last = n_in - 1 + p - kk;
    int64_t h = last < 0 ? 0 : last / s + 1;
    *hi = h < n_out ? h : n_out;
    *lo = l < *hi ? l : *hi;
}

#endif
