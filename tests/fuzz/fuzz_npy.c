/* fuzz_npy.c: NumPy .npy files through nl_npy_load (header, dtype, shape, data size). */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    nl_tensor *t = nl_npy_load(fuzz_file("in.npy", data, n));
    if (!t) fuzz_check_error();
    nl_tensor_release(t);
    return 0;
}
