/* cpuinfo.c: the processor's cpuid features and the OpenBLAS kernels in use, with the start-up check
 * that makes OpenBLAS use kernels as new as the processor.
 *
 * Debian's OpenBLAS (DYNAMIC_ARCH) picks its kernels by processor model in its library constructor;
 * on a model newer than the library it falls back to its oldest x86-64 kernels ("Prescott", SSE3),
 * several times slower. It reads OPENBLAS_CORETYPE only there, before any code of ours runs, and has
 * no call to change the choice afterwards. So a constructor of ours (which runs after OpenBLAS's,
 * before main and before any I/O) compares the choice with the cpuid features and, when it is
 * older, executes the same program again once with OPENBLAS_CORETYPE set. The new process inherits
 * the variable (so it does not restart again, and nor do the programs it starts), and
 * NNLAB_BLAS_RESTARTED="chose:want" records what happened for sys.info. OPENBLAS_CORETYPE set by
 * the user is always respected. This lives in libnnlab.a and is linked in by nl_init, so build/nnlab
 * and every test and bench binary get it. */
#include "cpuinfo.h"

#include <cpuid.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* OpenBLAS's own calls (cblas.h declares them, but we need nothing else from it here). */
char *openblas_get_corename(void);
char *openblas_get_config(void);

#define RESTART_VAR "NNLAB_BLAS_RESTARTED"

static nl_cpu_info cpu;
static bool cpu_done;

const nl_cpu_info *nl_cpu_get_info(void)
{
    if (cpu_done) return &cpu;
    cpu_done = true;
    __builtin_cpu_init(); /* needed before __builtin_cpu_supports in a constructor */
    unsigned a, b, c, d;
    if (__get_cpuid(0, &a, &b, &c, &d)) {
        memcpy(cpu.vendor, &b, 4), memcpy(cpu.vendor + 4, &d, 4), memcpy(cpu.vendor + 8, &c, 4);
        cpu.vendor[12] = '\0';
    }
    if (__get_cpuid(1, &a, &b, &c, &d)) {
        int base_family = (a >> 8) & 0xf, base_model = (a >> 4) & 0xf;
        cpu.family = base_family + (base_family == 0xf ? (a >> 20) & 0xff : 0);
        cpu.model_id = base_model + (base_family == 6 || base_family == 0xf ? ((a >> 16) & 0xf) << 4 : 0);
    }
    if ((unsigned)__get_cpuid_max(0x80000000, NULL) >= 0x80000004u) {
        unsigned r[12];
        for (unsigned i = 0; i < 3; i++)
            __get_cpuid(0x80000002 + i, &r[4 * i], &r[4 * i + 1], &r[4 * i + 2], &r[4 * i + 3]);
        char brand[49];
        memcpy(brand, r, 48);
        brand[48] = '\0';
        const char *s = brand;
        while (*s == ' ') s++;
        snprintf(cpu.model, sizeof cpu.model, "%s", s);
        for (size_t n = strlen(cpu.model); n > 0 && cpu.model[n - 1] == ' '; n--) cpu.model[n - 1] = '\0';
    }
    cpu.avx2 = __builtin_cpu_supports("avx2");
    cpu.fma = __builtin_cpu_supports("fma");
    cpu.avx512f = __builtin_cpu_supports("avx512f");
    cpu.avx512bw = __builtin_cpu_supports("avx512bw");
    cpu.avx512vl = __builtin_cpu_supports("avx512vl");
    cpu.avx512dq = __builtin_cpu_supports("avx512dq");
    cpu.avx512_vnni = __builtin_cpu_supports("avx512vnni");
    cpu.avx512_bf16 = __builtin_cpu_supports("avx512bf16");
    /* AMX-TILE: cpuid leaf 7, EDX bit 24 (clang has no __builtin_cpu_supports name for it). */
    cpu.amx = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d >> 24 & 1);
    return &cpu;
}

/* ---------------------------------------------------------------- the core choice ------- */

enum { LEVEL_OLD, LEVEL_AVX2, LEVEL_AVX512 };

/* What OpenBLAS's kernels for a core need; cores not named here count as older than Haswell. */
static int core_level(const char *core)
{
    static const struct { const char *name; int level; } cores[] = {
        {"Haswell", LEVEL_AVX2},      {"Zen", LEVEL_AVX2},
        {"SkylakeX", LEVEL_AVX512},   {"Cooperlake", LEVEL_AVX512},
        {"SapphireRapids", LEVEL_AVX512},
    };
    for (size_t i = 0; core && i < sizeof cores / sizeof cores[0]; i++)
        if (strcmp(core, cores[i].name) == 0) return cores[i].level;
    return LEVEL_OLD;
}

const char *nl_blas_core_wanted(const char *core, const nl_cpu_info *c)
{
    int need = c->avx512f && c->avx512bw && c->avx512vl && c->avx512dq && c->avx2 && c->fma ? LEVEL_AVX512
             : c->avx2 && c->fma                                                             ? LEVEL_AVX2
                                                                                             : LEVEL_OLD;
    if (core_level(core) >= need) return NULL;
    return need == LEVEL_AVX512 ? "SkylakeX" : "Haswell";
}

bool nl_restart_env_wanted(void)
{
    if (!nl_restart_env || !nl_restart_env[0]) return false;
    for (int i = 0; nl_restart_env[i] && nl_restart_env[i + 1]; i += 2)
        if (getenv(nl_restart_env[i])) return false;
    return true;
}

void nl_restart_env_apply(bool set)
{
    for (int i = 0; nl_restart_env && nl_restart_env[i] && nl_restart_env[i + 1]; i += 2) {
        if (set) setenv(nl_restart_env[i], nl_restart_env[i + 1], 1);
        else unsetenv(nl_restart_env[i]);
    }
}

void nl_blas_restart(char **argv, const char *want, const char *chose)
{
    char note[128];
    snprintf(note, sizeof note, "%s:%s", chose, want);
    if (setenv("OPENBLAS_CORETYPE", want, 1) != 0 || setenv(RESTART_VAR, note, 1) != 0) return;
    bool extra = nl_restart_env_wanted();
    if (extra) nl_restart_env_apply(true);
    fflush(NULL);
    execv("/proc/self/exe", argv);
    if (errno == ENOENT && argv[0]) execvp(argv[0], argv); /* no /proc (a bare chroot) */
    int err = errno; /* exec failed: leave the environment as it was */
    unsetenv("OPENBLAS_CORETYPE");
    unsetenv(RESTART_VAR);
    if (extra) nl_restart_env_apply(false);
    errno = err;
}

static nl_blas_info blas;
static char blas_version[64], blas_chose[32], blas_problem[160];

/* Fills `blas` from OpenBLAS and the environment; with argv (the start-up check) also restarts
 * the program when the kernels are older than this processor's. */
static void blas_check(char **argv)
{
    const char *config = openblas_get_config();
    int n = 0;
    sscanf(config, "%*s %*s%n", &n); /* "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH ..." */
    snprintf(blas_version, sizeof blas_version, "%.*s", n > 0 ? n : 63, config);
    blas.version = blas_version;
    blas.core = openblas_get_corename();
    blas.wanted = nl_blas_core_wanted(blas.core, nl_cpu_get_info());

    const char *env = getenv("OPENBLAS_CORETYPE"), *note = getenv(RESTART_VAR);
    if (env && *env) {
        /* Ours when the note's target is the variable's value; the user's otherwise. */
        const char *colon = note ? strchr(note, ':') : NULL;
        if (colon && strcmp(colon + 1, env) == 0) {
            blas.chosen_by = "nnlab";
            snprintf(blas_chose, sizeof blas_chose, "%.*s", (int)(colon - note), note);
            blas.openblas_chose = blas_chose;
        } else
            blas.chosen_by = "OPENBLAS_CORETYPE";
        if (blas.wanted)
            snprintf(blas_problem, sizeof blas_problem,
                     "OPENBLAS_CORETYPE=%s is set (always respected) and gave %s kernels", env, blas.core);
    } else {
        blas.chosen_by = "OpenBLAS";
        if (!blas.wanted) return;
        const char *preload = getenv("LD_PRELOAD");
        if (!strstr(config, "DYNAMIC_ARCH"))
            snprintf(blas_problem, sizeof blas_problem,
                     "this OpenBLAS is built for one core (no DYNAMIC_ARCH)");
        else if (preload && strstr(preload, "vgpreload"))
            snprintf(blas_problem, sizeof blas_problem,
                     "not restarted under valgrind (the new process would leave it)");
        else if (argv && argv[0]) {
            nl_blas_restart(argv, blas.wanted, blas.core);
            snprintf(blas_problem, sizeof blas_problem, "restarting with OPENBLAS_CORETYPE=%s failed: %s",
                     blas.wanted, strerror(errno));
            fprintf(stderr, "nnlab: OpenBLAS runs %s kernels on a CPU that can run %s ones; %s "
                    "(set OPENBLAS_CORETYPE=%s)\n", blas.core, blas.wanted, blas_problem, blas.wanted);
        } else
            snprintf(blas_problem, sizeof blas_problem, "no command line to restart with");
    }
    blas.problem = blas_problem[0] ? blas_problem : NULL;
}

/* glibc passes constructors of the main program its argc, argv and environment. */
__attribute__((constructor)) static void blas_check_at_start(int argc, char **argv, char **envp)
{
    (void)argc, (void)envp;
    blas_check(argv);
}

const nl_blas_info *nl_blas_get_info(void)
{
    if (!blas.core) blas_check(NULL);
    return &blas;
}

const char *nl_blas_summary(void)
{
    static char line[256];
    const nl_blas_info *b = nl_blas_get_info();
    if (strcmp(b->chosen_by, "nnlab") == 0)
        snprintf(line, sizeof line, "%s, %s kernels (set by nnlab: OpenBLAS chose %s)", b->version,
                 b->core, b->openblas_chose);
    else
        snprintf(line, sizeof line, "%s, %s kernels (%s%s%s%s)", b->version, b->core,
                 strcmp(b->chosen_by, "OpenBLAS") == 0 ? "OpenBLAS's choice" : "set by OPENBLAS_CORETYPE",
                 b->wanted ? "; this CPU can run " : "", b->wanted ? b->wanted : "",
                 b->wanted ? " kernels" : "");
    return line;
}
