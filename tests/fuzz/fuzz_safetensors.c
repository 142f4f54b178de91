/* fuzz_safetensors.c: safetensors files: the validating reader (every tensor read back), a
 * module checkpoint (architecture + weights) and an optimizer's state on the rebuilt module. */
#include "fuzz.h"
#include "checkpoint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    nl_st_file *f = nl_st_open(fuzz_file("in.safetensors", data, n));
    if (!f) {
        fuzz_check_error();
        return 0;
    }
    for (int i = 0; i < nl_st_count(f); i++) {
        nl_tensor *t = nl_st_get(f, nl_st_at(f, i)->name);
        if (!t) fuzz_check_error();
        nl_tensor_release(t);
    }
    for (int i = 0; i < nl_st_meta_count(f); i++) {
        const char *k, *v;
        nl_st_meta_at(f, i, &k, &v);
        if (!k || !v) abort();
    }
    nl_module *m = nl_checkpoint_module_from(f);
    if (!m) fuzz_check_error();
    for (int k = 0; m && k < NL_OPTIM_KIND_COUNT; k++) {
        nl_optim *o = nl_optim_new((nl_optim_kind)k, m, NULL);
        if (o && nl_checkpoint_load_optim(f, o) != NL_OK) fuzz_check_error();
        nl_optim_release(o);
    }
    nl_module_release(m);
    nl_st_close(f);
    return 0;
}
