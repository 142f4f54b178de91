/* layer.h: helpers shared by the layer files in core/ (initialisation, work buffers, shape
 * messages); private to core, not part of the public contract in nn.h. */
#ifndef NL_LAYER_H
#define NL_LAYER_H

#include "nn.h"

/* Adds a parameter of this shape (with a gradient) drawn from U(-bound, bound) on the seeded RNG,
 * PyTorch's default initialisation of weights and biases. NL_ENOMEM / NL_EINVAL on failure. */
nl_status nl_layer_uniform_param(nl_module *m, const char *name, int ndim, const int64_t *shape,
                                 double bound);

/* A work buffer kept in *slot (a reference the caller's state owns): the tensor there if it has
 * this dtype, shape and device, else a fresh one that replaces it. Borrowed: do not release.
 * NULL with the error set when the allocation fails. */
nl_tensor *nl_layer_buffer(nl_tensor **slot, nl_dtype dtype, int ndim, const int64_t *shape,
                           nl_device dev);

/* Argument specs shared by a layer's float, quantized and QAT types (rows of nl_argspec; NAN
 * defaults mean required, or worked out by the layer). */
#define NL_ARGS_FEATURES \
    {.name = "in", .def = NAN, .integer = true, .min = 1, .doc = "input features"}, \
    {.name = "out", .def = NAN, .integer = true, .min = 1, .doc = "output features"}
#define NL_ARGS_CONV \
    {.name = "in", .def = NAN, .integer = true, .min = 1, .doc = "input channels"}, \
    {.name = "out", .def = NAN, .integer = true, .min = 1, .doc = "output channels (filters)"}, \
    {.name = "k", .def = NAN, .integer = true, .min = 1, .doc = "kernel size (k x k)"}, \
    {.name = "stride", .def = 1, .integer = true, .min = 1, .doc = "step between windows"}, \
    {.name = "padding", .def = 0, .integer = true, .min = 0, .doc = "zeros added on each side"}
#define NL_ARG_BIAS {.name = "bias", .def = 1, .integer = true, .boolean = true, .doc = "an added bias"}
#define NL_ARGS_WINDOW \
    {.name = "k", .def = NAN, .integer = true, .min = 1, .doc = "window size (k x k)"}, \
    {.name = "stride", .def = NAN, .integer = true, .min = 1, .doc = "step between windows (default k)"}, \
    {.name = "padding", .def = 0, .integer = true, .min = 0, .doc = "padding on each side (at most k/2)"}

/* The product of the n factors (sizes from a user or a file), or INT64_MAX when it does not fit:
 * sizes and multiply-add counts never overflow (undefined behaviour), they saturate. */
int64_t nl_layer_product(int n, const int64_t *factors);

/* NL_ESHAPE with "<Type>: <message> (input [..])". */
nl_status nl_layer_shape_error(const nl_module *m, int ndim, const int64_t *in, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Whether pool is a MaxPool2d whose input is the output of relu, a ReLU, so that one pass can do
 * both backwards (nl_maxpool_relu_backward). */
bool nl_maxpool_after_relu(const nl_module *pool, const nl_module *relu);

/* The backward of such a pair: the pool's, with each window's gradient sent to its maximum only
 * where that maximum is positive, which is the ReLU's backward as well; *gx is the gradient with
 * respect to the ReLU's input. Saves the ReLU's pass over the whole gradient. */
nl_status nl_maxpool_relu_backward(nl_module *pool, nl_tensor *gy, nl_tensor **gx);

#endif
