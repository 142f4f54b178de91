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
    fuzz_infer(m);
    char *back = nl_checkpoint_arch_json(m);
    free(back);
    nl_module_release(m);
    return 0;
}
