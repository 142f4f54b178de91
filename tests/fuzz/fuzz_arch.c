/* fuzz_arch.c: the architecture JSON of checkpoints through nl_checkpoint_arch_build, and a
 * network it builds through shape inference and printing back to JSON. */
#include "fuzz.h"
#include "checkpoint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    char *json = malloc(n + 1);
    if (!json) return 0;
    memcpy(json, data, n);
    json[n] = 0;
    /* As much as a checkpoint with data as long as this input would allow (with its 1 MiB spare). */
    nl_module *m = nl_checkpoint_arch_build(json, "fuzz", (int64_t)n + (1 << 20));
    free(json);
    if (!m) {
        fuzz_check_error();
        return 0;
    }
    int nd;
    int64_t out[NL_MAX_DIMS], macs;
    static const int64_t shapes[][4] = {{1, 3, 8, 8}, {2, 1, 28, 28}, {1, 16, 1, 1}};
    for (int i = 0; i < 3; i++)
        if (nl_module_infer(m, 4, shapes[i], &nd, out, &macs) != NL_OK) fuzz_check_error();
    if (nl_module_infer(m, 2, (const int64_t[]){4, 10}, &nd, out, &macs) != NL_OK) fuzz_check_error();
    char *back = nl_checkpoint_arch_json(m);
    free(back);
    nl_module_release(m);
    return 0;
}
