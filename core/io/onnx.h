/* onnx.h: ONNX files in and out (the protobuf code is generated at build time from Debian's
 * onnx.proto by protoc-c). Export writes any float network, an int8 network of quant.int8 as QDQ,
 * an int4 network as its dequantized float weights; import rebuilds a network from a graph that
 * PyTorch's exporter (or nnlab) wrote in the operator subset nnlab has. */
#ifndef NL_ONNX_H
#define NL_ONNX_H

#include "nn.h"

/* The opsets export can target: 13 (per-channel QuantizeLinear, Softmax over the last axis) to
 * 21; GELU is one Gelu node from 20 on, the erf formula before. */
#define NL_ONNX_OPSET_MIN 13
#define NL_ONNX_OPSET_MAX 21
#define NL_ONNX_OPSET_DEFAULT 17

typedef struct {
    int ndim;                        /* the input shape, batch first; 0: found from the first layer */
    int64_t shape[NL_MAX_DIMS];
    int opset;                       /* 0: NL_ONNX_OPSET_DEFAULT */
    bool dynamic_batch;              /* the input's first dimension is the symbol "N" */
    const char *doc;                 /* the model's doc string (may be NULL) */
} nl_onnx_opts;

/* Writes net (evaluation form: batch normalisation with its running statistics, dropout as
 * identity) to path as an ONNX model whose graph has one input "input" and one output "logits",
 * initializers named as nnlab's safetensors name the parameters ("0.weight", "3.1.bias").
 * Atomic: on failure the previous file is intact. NL_EUNSUPPORTED naming the layer (its 1-based
 * path, its type and why) for a layer ONNX cannot carry, NL_ESHAPE when the network does not take
 * the input shape, NL_EINVAL for a bad opset, NL_EIO / NL_ENOMEM. */
nl_status nl_onnx_export(nl_module *net, const char *path, const nl_onnx_opts *opts);

/* Reads an ONNX model and returns it as a network (a Sequential, nn.Residual for skip-adds) in
 * evaluation mode on the CPU: new reference, or NULL with NL_EIO (cannot read), NL_EFORMAT (not a
 * valid self-contained model: truncated, not protobuf, an initializer whose data does not match
 * its shape, external data, a cycle; messages name the path and the part) or NL_EUNSUPPORTED (a
 * node or pattern nnlab cannot represent, named with its op type and position). Loading never
 * allocates much beyond the file's size: tensors under nl_alloc_budget(2 x file size + 1 MiB: the
 * parameters and their gradients), the
 * parsed message under a cap of NL_ONNX_PARSE_FACTOR times the file size + 1 MiB. */
#define NL_ONNX_PARSE_FACTOR 16
nl_module *nl_onnx_load(const char *path);

/* The doc string and producer ("nnlab 0.1.0") of an ONNX file, for inspection: *doc and
 * *producer are malloc'ed strings (free()), either may be NULL on input. NL_EIO / NL_EFORMAT. */
nl_status nl_onnx_info(const char *path, char **doc, char **producer);

#endif
