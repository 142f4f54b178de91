/* cpuinfo.h: what the processor can do (cpuid) and which kernels OpenBLAS runs on it. Before main,
 * nnlab restarts itself once with OPENBLAS_CORETYPE set when OpenBLAS chose kernels older than the
 * processor can run (see cpuinfo.c). */
#ifndef NL_CPUINFO_H
#define NL_CPUINFO_H

#include <stdbool.h>

typedef struct {
    char vendor[13];   /* "GenuineIntel", "AuthenticAMD", ... */
    char model[49];    /* the brand string, "Intel(R) Xeon(R) Platinum 8480+" ("" if none) */
    int family, model_id; /* display family and model (Sapphire Rapids: 6 and 143) */
    /* cpuid features usable here (the OS saves their registers), as __builtin_cpu_supports. */
    bool avx2, fma, avx512f, avx512bw, avx512vl, avx512dq, avx512_vnni, avx512_bf16, amx;
} nl_cpu_info;

/* This processor; a static object filled once. */
const nl_cpu_info *nl_cpu_get_info(void);

typedef struct {
    const char *version;  /* "OpenBLAS 0.3.21" */
    const char *core;     /* the kernels in use: openblas_get_corename(), "Haswell" */
    /* Who chose them: "OpenBLAS" (its own cpuid check), "nnlab" (restarted with
     * OPENBLAS_CORETYPE=core because OpenBLAS had chosen openblas_chose) or "OPENBLAS_CORETYPE"
     * (set by the user, always respected). */
    const char *chosen_by;
    const char *openblas_chose; /* NULL unless chosen_by is "nnlab" */
    /* The core this processor should run when `core` is older (NULL when it is right), and why
     * nnlab left it (NULL when it did not: then chosen_by says OPENBLAS_CORETYPE). */
    const char *wanted, *problem;
} nl_blas_info;

/* The BLAS and its kernels; a static object filled before main. */
const nl_blas_info *nl_blas_get_info(void);

/* One line for the banner and --version: "OpenBLAS 0.3.21, Haswell kernels (OpenBLAS's choice)". */
const char *nl_blas_summary(void);

/* The OpenBLAS core that a processor with cpu's features should run when OpenBLAS chose `core`,
 * or NULL when `core` is as good: AVX-512 F/BW/VL/DQ need an AVX-512 core (SkylakeX, Cooperlake,
 * SapphireRapids; "SkylakeX" is returned), AVX2 + FMA at least Haswell (Haswell, Zen or an
 * AVX-512 core; "Haswell" is returned). By cpuid features, never by processor model. */
const char *nl_blas_core_wanted(const char *core, const nl_cpu_info *cpu);

/* Replaces this process with argv run again (/proc/self/exe, else argv[0] when there is no /proc)
 * with OPENBLAS_CORETYPE=want, recording that OpenBLAS had chosen `chose`; returns only on failure
 * (errno set, environment unchanged). What the start-up check does; exposed for its test. */
void nl_blas_restart(char **argv, const char *want, const char *chose);

/* Settings a program wants at its start that, like OPENBLAS_CORETYPE, only take effect when the
 * process starts (build/nnlab: OpenMP's wait policy and spin count, see repl/main.c). A program
 * that defines this list (NAME, VALUE pairs, then NULL) gets them in the same restart as the BLAS
 * fix, so it starts at most twice; the pairs are set only when none of the NAMEs is set (the
 * user's choice stands: nl_restart_env_wanted). Programs that do not define it (tests, benches)
 * restart for the BLAS fix alone. */
extern const char *const nl_restart_env[] __attribute__((weak));
bool nl_restart_env_wanted(void);
/* Sets (or, set false, removes) every NAME of nl_restart_env. */
void nl_restart_env_apply(bool set);

#endif
