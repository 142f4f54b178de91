/* isa.c: which instruction set the CPU kernels use: chosen by cpuid features (never by processor
 * model), lowered by the environment NNLAB_ISA=generic|avx2|avx512 or nl_cpu_set_isa so that the
 * paths an older CPU takes run (and are tested) on a newer one; and the notes kernels leave of
 * which path they took (nn.profile). */
#include "cpu/cpu.h"
#include "cpu_kernels.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const isa_names[CPU_ISA_COUNT] = {
    [CPU_ISA_GENERIC] = "generic", [CPU_ISA_AVX2] = "avx2", [CPU_ISA_AVX512] = "avx512"};

static bool has(cpu_isa_level l)
{
    switch (l) {
    case CPU_ISA_AVX512:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && has(CPU_ISA_AVX2);
    case CPU_ISA_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    default: return true;
    }
}

static cpu_isa_level best(void)
{
    return has(CPU_ISA_AVX512) ? CPU_ISA_AVX512 : has(CPU_ISA_AVX2) ? CPU_ISA_AVX2 : CPU_ISA_GENERIC;
}

static int parse(const char *name)
{
    for (int l = 0; l < CPU_ISA_COUNT; l++)
        if (strcmp(name, isa_names[l]) == 0) return l;
    return -1;
}

static int forced = -1;  /* set by nl_cpu_set_isa; -1: the environment or the CPU decides */
static int from_env = -2; /* NNLAB_ISA, read once: -2 unread, -1 unset */

nl_status nl_cpu_set_isa(const char *name)
{
    if (!name || strcmp(name, "auto") == 0) {
        forced = -1;
        return NL_OK;
    }
    const int l = parse(name);
    if (l < 0) return nl_seterr(NL_EINVAL, "cpu: unknown ISA '%s' (auto, generic, avx2, avx512)", name);
    if (!has(l)) return nl_seterr(NL_EUNSUPPORTED, "cpu: this CPU has no %s", isa_names[l]);
    forced = l;
    return NL_OK;
}

cpu_isa_level cpu_isa(void)
{
    if (forced >= 0) return forced;
    if (from_env == -2) {
        const char *env = getenv("NNLAB_ISA");
        from_env = -1;
        if (env && *env && strcmp(env, "auto") != 0) {
            const int l = parse(env);
            if (l < 0)
                fprintf(stderr, "nnlab: NNLAB_ISA=%s is not one of generic, avx2, avx512; using %s\n",
                        env, isa_names[best()]);
            else if (!has(l))
                fprintf(stderr, "nnlab: NNLAB_ISA=%s refused: this CPU has no %s; using %s\n", env,
                        env, isa_names[best()]);
            else from_env = l;
        }
    }
    return from_env >= 0 ? (cpu_isa_level)from_env : best();
}

const char *nl_cpu_isa(void) { return isa_names[cpu_isa()]; }

const char *nl_cpu_blas_core(void)
{
    const char *c = openblas_get_corename();
    return c ? c : "unknown";
}

/* ---------------------------------------------------------------- kernel notes ---------- */

static char notes[192]; /* what ran since nl_cpu_kernels_take: "a, b, c" */

void cpu_note_kernel(const char *what, const char *how)
{
    char one[64];
    snprintf(one, sizeof one, "%s %s", what, how);
    if (strstr(notes, one)) return;
    const size_t len = strlen(notes);
    snprintf(notes + len, sizeof notes - len, "%s%s", len ? ", " : "", one);
}

void nl_cpu_kernels_take(char *buf, size_t n)
{
    snprintf(buf, n, "%s", notes);
    notes[0] = 0;
}
