/* fuzz_onnx.c: ONNX files through onnx.load's reader (protobuf-c under its allocation cap, the
 * validation, the graph walk), and a network it builds through shape inference and export back. */
#include "fuzz.h"
#include "onnx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    const char *path = fuzz_file("in.onnx", data, n);
    char *doc = NULL, *producer = NULL;
    if (nl_onnx_info(path, &doc, &producer) != NL_OK) fuzz_check_error();
    free(doc);
    free(producer);
    nl_module *m = nl_onnx_load(path);
    if (!m) {
        fuzz_check_error();
        return 0;
    }
    fuzz_infer(m);
    if (nl_onnx_export(m, fuzz_path("out.onnx"), NULL) != NL_OK) fuzz_check_error();
    nl_module_release(m);
    return 0;
}
