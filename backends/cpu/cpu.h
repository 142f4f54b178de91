/* cpu.h: the CPU backend (OpenMP kernels + OpenBLAS), the reference implementation of every op.
 * core/backend.c registers it in nl_init. */
#ifndef NL_CPU_H
#define NL_CPU_H

#include "nl.h"

/* The CPU backend's vtable: a static object, never freed; calling it again returns the same one. */
nl_backend *nl_cpu_backend(void);

#endif
