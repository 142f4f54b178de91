/* test_cpuinfo.c: the choice of OpenBLAS kernels: which core a processor's cpuid features call for
 * (made-up processors, so the AVX-512 cases run everywhere), the restart that makes OpenBLAS use it
 * (a real exec of this binary), and the kernels this very binary runs. */
#include "cpuinfo.h"
#include "nl.h"
#include "testhelp.h"

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

char *openblas_get_corename(void);

static const char *wanted(const char *core, nl_cpu_info c) { return nl_blas_core_wanted(core, &c); }

static bool same(const char *a, const char *b) { return a == b || (a && b && strcmp(a, b) == 0); }

#define CHECK_WANTED(core, cpu, expect) do { const char *w_ = wanted(core, cpu); \
    CHECK(same(w_, expect), "%s on %s: wanted %s, expected %s", core, #cpu, w_ ? w_ : "nothing", \
          (expect) ? (const char *)(expect) : "nothing"); } while (0)

static void test_wanted(void)
{
    /* Sapphire/Emerald Rapids: AVX-512 F/BW/VL/DQ, VNNI, BF16, AMX. */
    nl_cpu_info spr = {.avx2 = true, .fma = true, .avx512f = true, .avx512bw = true, .avx512vl = true,
                       .avx512dq = true, .avx512_vnni = true, .avx512_bf16 = true, .amx = true};
    nl_cpu_info zen4 = {.avx2 = true, .fma = true, .avx512f = true, .avx512bw = true,
                        .avx512vl = true, .avx512dq = true, .avx512_vnni = true, .avx512_bf16 = true};
    nl_cpu_info zen3 = {.avx2 = true, .fma = true};
    /* Knights Landing has AVX-512 F but not BW/VL/DQ: AVX2 kernels are what it can count on. */
    nl_cpu_info knl = {.avx2 = true, .fma = true, .avx512f = true};
    nl_cpu_info avx_only = {0};
    nl_cpu_info avx2_no_fma = {.avx2 = true};

    CHECK_WANTED("Prescott", spr, "SkylakeX"); /* Debian's OpenBLAS 0.3.21 on an unknown Xeon */
    CHECK_WANTED("Haswell", spr, "SkylakeX");
    CHECK_WANTED("Zen", zen4, "SkylakeX"); /* 0.3.21 runs Zen (AVX2) kernels on Zen 4 */
    CHECK_WANTED("SkylakeX", spr, NULL);
    CHECK_WANTED("Cooperlake", spr, NULL);
    CHECK_WANTED("SapphireRapids", spr, NULL);
    CHECK_WANTED("Zen", zen3, NULL);
    CHECK_WANTED("Haswell", zen3, NULL);
    CHECK_WANTED("SkylakeX", zen3, NULL);
    CHECK_WANTED("Prescott", zen3, "Haswell");
    CHECK_WANTED("Sandybridge", zen3, "Haswell");
    CHECK_WANTED("Excavator", zen3, "Haswell");
    CHECK_WANTED("Unknown", zen3, "Haswell");
    CHECK_WANTED("Haswell", knl, NULL);
    CHECK_WANTED("Prescott", knl, "Haswell");
    CHECK_WANTED("Prescott", avx_only, NULL);
    CHECK_WANTED("Sandybridge", avx_only, NULL);
    CHECK_WANTED("Prescott", avx2_no_fma, NULL);
}

/* This program's start-up settings (as build/nnlab's OMP_WAIT_POLICY): set in the BLAS restart. */
const char *const nl_restart_env[] = {"NL_TEST_RESTART_A", "on", "NL_TEST_RESTART_B", "1", NULL};

/* Runs this binary again with `--report` and the environment changed as asked (value NULL:
 * removed), either by a plain exec or through nl_blas_restart(want, chose); puts the line it
 * prints ("core chosen_by openblas_chose A B", A and B the start-up settings or "-") in out and returns its exit status. */
static int report(const char *coretype, const char *note, const char *want, const char *chose,
                  char *out, size_t n)
{
    int fd[2];
    out[0] = '\0';
    if (pipe(fd) != 0) return -1;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        dup2(fd[1], STDOUT_FILENO);
        close(fd[0]), close(fd[1]);
        if (coretype) setenv("OPENBLAS_CORETYPE", coretype, 1); else unsetenv("OPENBLAS_CORETYPE");
        if (note) setenv("NNLAB_BLAS_RESTARTED", note, 1); else unsetenv("NNLAB_BLAS_RESTARTED");
        char *argv[] = {"test_cpuinfo", "--report", NULL};
        if (want) nl_blas_restart(argv, want, chose);
        else execv("/proc/self/exe", argv);
        _exit(99);
    }
    close(fd[1]);
    size_t got = 0;
    ssize_t r;
    while (got + 1 < n && (r = read(fd[0], out + got, n - 1 - got)) > 0) got += (size_t)r;
    out[got] = '\0';
    if (got && out[got - 1] == '\n') out[got - 1] = '\0';
    close(fd[0]);
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_restart(void)
{
    const char *core = openblas_get_corename();
    /* Any core other than the current one shows that the new process runs what was asked. */
    const char *target = strcmp(core, "Prescott") != 0 ? "Prescott" : "Nehalem";
    char out[256], expect[256];
    int rc = report(NULL, NULL, target, core, out, sizeof out);
    snprintf(expect, sizeof expect, "%s nnlab %s on 1", target, core);
    CHECK(rc == 0 && strcmp(out, expect) == 0, "restarted: exit %d, '%s', expected '%s'", rc, out, expect);

    /* The program's start-up settings come with that one restart, unless the user set any of them. */
    setenv("NL_TEST_RESTART_A", "mine", 1);
    rc = report(NULL, NULL, target, core, out, sizeof out);
    unsetenv("NL_TEST_RESTART_A");
    snprintf(expect, sizeof expect, "%s nnlab %s mine -", target, core);
    CHECK(rc == 0 && strcmp(out, expect) == 0, "user's setting: exit %d, '%s', expected '%s'", rc, out, expect);
    setenv("NL_TEST_RESTART_B", "2", 1);
    rc = report(NULL, NULL, target, core, out, sizeof out);
    unsetenv("NL_TEST_RESTART_B");
    snprintf(expect, sizeof expect, "%s nnlab %s - 2", target, core);
    CHECK(rc == 0 && strcmp(out, expect) == 0, "user's second setting: exit %d, '%s', expected '%s'", rc, out, expect);

    /* A note left by an earlier restart whose target is not the variable's value: the user's. */
    rc = report("Prescott", "Prescott:SkylakeX", NULL, NULL, out, sizeof out);
    CHECK(rc == 0 && strcmp(out, "Prescott OPENBLAS_CORETYPE - - -") == 0, "stale note: exit %d, '%s'", rc, out);
}

/* This binary went through the start-up check like every other: unless the user chose the
 * kernels, they are the ones its processor calls for. */
static void test_this_process(void)
{
    const nl_blas_info *b = nl_blas_get_info();
    CHECK(strcmp(b->core, openblas_get_corename()) == 0, "core %s, OpenBLAS says %s", b->core,
          openblas_get_corename());
    CHECK(strncmp(b->version, "OpenBLAS ", 9) == 0, "version '%s'", b->version);
    if (strcmp(b->chosen_by, "OPENBLAS_CORETYPE") == 0)
        printf("test_cpuinfo: OPENBLAS_CORETYPE=%s is set here; the kernels are the user's\n",
               getenv("OPENBLAS_CORETYPE"));
    else
        CHECK(b->wanted == NULL, "%s runs %s kernels (chosen by %s) where %s ones would run: %s",
              nl_cpu_get_info()->model, b->core, b->chosen_by, b->wanted, b->problem ? b->problem : "");
    CHECK(strstr(nl_blas_summary(), b->core) != NULL, "summary '%s'", nl_blas_summary());
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--report") == 0) {
        const nl_blas_info *b = nl_blas_get_info();
        const char *a = getenv("NL_TEST_RESTART_A"), *bb = getenv("NL_TEST_RESTART_B");
        printf("%s %s %s %s %s\n", b->core, b->chosen_by, b->openblas_chose ? b->openblas_chose : "-",
               a ? a : "-", bb ? bb : "-");
        return 0;
    }
    nl_init();
    test_wanted();
    test_restart();
    test_this_process();
    return TEST_REPORT();
}
