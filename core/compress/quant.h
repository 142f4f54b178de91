/* quant.h: post-training int8 quantization of networks (calibration, conversion to the integer
 * layers of qlayers.c), the quantization arithmetic itself, and per-layer reports. */
#ifndef NL_QUANT_H
#define NL_QUANT_H

#include "nn.h"

typedef enum { NL_QCALIB_MINMAX, NL_QCALIB_PERCENTILE } nl_qcalib;

typedef struct {
    nl_qcalib method;
    double percentile; /* NL_QCALIB_PERCENTILE: the range is [100-p, p] percentiles, e.g. 99.99 */
} nl_quant_opts;

/* Post-training int8 quantization. net is a Sequential (or one layer) of Conv2d, Linear, ReLU,
 * MaxPool2d, Flatten, Dropout and Identity; activation ranges are calibrated by running net (in
 * evaluation mode) on the nbatches inputs. Conv2d/Linear (with a following ReLU fused) become
 * QConv2d/QLinear, MaxPool2d QMaxPool2d; a Quantize enters the integer part and its last layer
 * returns f32; other layers stay float (copies) behind a Dequantize. Dropout and Identity are
 * dropped; a Flatten before a QLinear is absorbed (its weight columns are reordered for NHWC).
 * Returns a new network in evaluation mode (net is not changed), or NULL with NL_EINVAL (no
 * batches, a layer that is neither convertible nor in a Sequential) or the forward's error. */
nl_module *nl_quant_int8(nl_module *net, nl_tensor *const *batches, int nbatches,
                         const nl_quant_opts *opts);

/* Quantization-aware training: a new network (net unchanged) where each Conv2d / Linear (at the
 * top of a Sequential, or a lone one) becomes a QATConv2d / QATLinear with bits-bit fake-quantized
 * weights, and FakeQuant(bits) modules observe and round the activations where the integer model
 * quantizes them: the input and each such layer's output (after a following ReLU) unless it is the
 * last. It trains like any net (straight-through gradients). NULL with NL_EINVAL for bits outside
 * 2..8 or nested containers. */
nl_module *nl_quant_qat(nl_module *net, int bits);
/* The integer model of a QAT network (nl_quant_qat's layout, 8 bits): the layers of nl_quant_int8
 * with the FakeQuant ranges as activation quantizations and the weights quantized as in training.
 * New network, or NULL with NL_EINVAL (a FakeQuant that never observed data, bits other than 8). */
nl_module *nl_quant_convert(nl_module *net);

/* Symmetric per-output-channel int8 weights: w f32 [O, ...] -> q i8 (same shape) and scales f32
 * [O] (max |w_o| / 127; 1 for an all-zero row), q = clamp(round(w / s), -127, 127). Returns the
 * SQNR in dB of the dequantized weights (INFINITY when exact) in *sqnr (may be NULL). */
nl_status nl_quant_weights_i8(const nl_tensor *w, nl_tensor *q, nl_tensor *scales, double *sqnr);
/* The u8 affine quantization of the range [lo, hi] (widened to include 0): scale (rounded to f32)
 * = (hi - lo) / 255, zero point = round(-lo / scale) in 0..255. */
void nl_quant_affine(double lo, double hi, double *scale, double *zero_point);
/* The same on a grid of `bits` bits (0 .. 2^bits - 1); nl_quant_affine is the 8-bit case. */
void nl_quant_affine_bits(double lo, double hi, int bits, double *scale, double *zero_point);

/* Weight-only 4-bit quantization: net's Conv2d and Linear layers (at the top of a Sequential, or
 * a lone one) become Int4Conv2d / Int4Linear with a scale per group of `group` consecutive weights
 * of a row; other layers are copied. Returns a new network in evaluation mode, or NULL (NL_EINVAL
 * for group < 1). */
nl_module *nl_quant_int4(nl_module *net, int group);
/* w f32 [O, ...] (rows of K) -> packed u8 [O, ceil(K/2)] nibbles q + 8 (q = clamp(round(w / s),
 * -8, 7), element 2j in the low half of byte j), codes u8 [O, ceil(K/group)] with the group scale
 * s = base * code (code = ceil(amax / 7 / base), base = the largest group's amax / 7 / 255), *base,
 * and the SQNR of the dequantized weights in dB in *sqnr (may be NULL). */
nl_status nl_quant_weights_int4(const nl_tensor *w, int group, nl_tensor *packed, nl_tensor *codes,
                                double *base, double *sqnr);

/* The f32 weights a quantized layer computes with (QConv2d / QLinear: i8 * per-channel scale,
 * Int4Conv2d / Int4Linear: dequantized nibbles), in the float layer's shape ([out, in, k, k] or
 * [out, in]), for plots such as weight histograms. New reference, or NULL with NL_EINVAL for other
 * layers. */
nl_tensor *nl_quant_weights_f32(nl_module *m);

/* The integer levels of a quantized layer's weights, as f32 in the float layer's shape: QConv2d /
 * QLinear their i8 values (weight = level * channel scale), Int4Conv2d / Int4Linear nibble - 8
 * (weight = level * group scale); the range of the levels (-128..127 or -8..7) in *qmin, *qmax
 * (either may be NULL). For histograms where the levels show apart: each channel or group has its
 * own scale, so the weights themselves mix the grids. New reference, or NULL with NL_EINVAL for
 * other layers. */
nl_tensor *nl_quant_levels(nl_module *m, int *qmin, int *qmax);

/* One row of a report: a quantized layer of the network. */
typedef struct {
    char path[32];      /* "3" (child index, 1-based as in Lua), "" for a lone layer */
    char type[16];      /* "QConv2d", "Quantize", ... */
    int bits;           /* weight bits (8 or 4; activation-only layers: 8) */
    double wscale_min, wscale_max; /* per-channel weight scales (0 when none) */
    double in_scale, out_scale;    /* activation scales (0 when f32) */
    double wsqnr, asqnr;           /* dB, NAN when unknown */
} nl_quant_row;

/* Fills up to max rows for the quantized layers of net (depth first); returns how many there are. */
int nl_quant_report(nl_module *net, nl_quant_row *rows, int max);

/* The int8 kernels' instruction set: "auto", "generic", "avx2" or "vnni" (see
 * nl_cpu_qgemm_set_isa); NL_EINVAL for an unknown name, NL_EUNSUPPORTED for one the CPU lacks. */
nl_status nl_quant_set_isa(const char *name);
const char *nl_quant_isa(void);
/* The machine's int8 multiply-add peak in GOP/s at the current thread count and the instruction
 * it was measured with (see nl_cpu_qgemm_peak_gops; again: measure once more, keep the best). */
double nl_quant_peak_gops(bool again);
const char *nl_quant_peak_instr(void);

#endif
