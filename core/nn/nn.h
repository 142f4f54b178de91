/* nn.h: modules (layers with forward and backward, after Torch7's nn contract), losses,
 * optimizers and checkpoints. Pure C11 over nl.h; the Lua bindings are in dsl/nn.c. */
#ifndef NL_NN_H
#define NL_NN_H

#include "nl.h"

/* ---------------------------------------------------------------- module types ---------- */

#define NL_MAX_ARGS 8
#define NL_MAX_PARAMS 6
/* The deepest nesting of containers a network may have (a lone layer is 1 deep): every way of
 * building one (Lua, checkpoints, architecture JSON) refuses deeper, naming where. */
#define NL_MAX_DEPTH 100

/* One constructor argument of a module type. Positional arguments come first (npos of them);
 * the rest are options with defaults. Every value is a number (booleans are 0/1). */
typedef struct {
    const char *name;     /* "in", "out", "k", "stride", "padding", "bias", ... */
    double def;           /* default for options; NAN: derived by init (a pool's stride = k),
                             which then stores the value it used in m->args */
    bool integer;         /* must be a whole number */
    double min;           /* smallest valid value (e.g. 1 for sizes, 0 for padding) */
    const char *doc;      /* one line for help */
    bool boolean;         /* a flag (0/1): given as true/false, printed as such */
} nl_argspec;

typedef struct nl_module nl_module;

/* A module type: the single table that drives construction (from Lua or from a checkpoint),
 * printing, help and dispatch. A layer's file defines one and core/nn/module.c lists it. */
typedef struct nl_module_type {
    const char *name;     /* "Conv2d" */
    const char *sig;      /* "nn.Conv2d(in, out, k, {stride=1, padding=0, bias=true})" */
    const char *doc;      /* one or two lines for help */
    const char *example;  /* a line of Lua */
    int npos;             /* leading positional arguments in args */
    nl_argspec args[NL_MAX_ARGS]; /* terminated by a row with name NULL */
    bool container;       /* children are set by the caller (Sequential, Residual) */
    /* Creates parameters and state from m->args (already validated against the specs).
     * Parameters are initialised as PyTorch does, from the seeded RNG. */
    nl_status (*init)(nl_module *m);
    /* y = f(x): returns a new reference in *y. Must keep what backward needs (m->input is set
     * by nl_module_forward before the call). */
    nl_status (*forward)(nl_module *m, nl_tensor *x, nl_tensor **y);
    /* Given dL/dy, returns dL/dx (new reference) and ADDS parameter gradients into grads. */
    nl_status (*backward)(nl_module *m, nl_tensor *gy, nl_tensor **gx);
    /* Output shape for an input shape (NL_ESHAPE with a message naming the layer and both
     * shapes if the input does not fit) and the multiply-adds of one forward pass. */
    nl_status (*infer)(const nl_module *m, int ndim, const int64_t *in, int *out_ndim,
                       int64_t *out, int64_t *macs);
    void (*destroy)(nl_module *m); /* frees m->state (parameters are freed by the core); may be NULL */
    /* backward accepts gx == NULL: then it only adds the parameter gradients (skipping the work of
     * dL/dx, e.g. for a net's first layer). Types without it get a gx that the core drops. */
    bool input_grad_optional;
    /* forward takes inputs of any dtype (quantized layers pass u8 activations); others get f32. */
    bool any_input_dtype;
    /* The kernels exist on the CPU only (int8 / int4 inference): nl_module_to refuses another
     * device, naming the layer (the policy: convert explicitly, never copy per step). */
    bool cpu_only;
    /* Moves m's own state to dev (tensors and modules outside m->params: a QAT twin, scales);
     * NULL when there is none, or only work buffers that are remade on the input's device. */
    nl_status (*to)(nl_module *m, nl_device dev);
    /* Its parameter named "weight" (when it has one) is pruned as a Linear's weight is (magnitude
     * pruning, masks): the layers written in Lua (nn.define). Linear and Conv2d are prunable by
     * type. */
    bool prunable_weight;
} nl_module_type;

/* A parameter (with a gradient) or a buffer (grad NULL, e.g. running statistics). */
typedef struct {
    char name[24];
    nl_tensor *value;
    nl_tensor *grad;
} nl_param;

struct nl_module {
    const nl_module_type *type;
    int refcount;
    bool training;
    double args[NL_MAX_ARGS];     /* in the order of type->args */
    int nparams;
    nl_param params[NL_MAX_PARAMS];
    int nchildren;
    nl_module **children;         /* owned references (containers) */
    int nparents;
    nl_module **parents;          /* the containers holding this module (borrowed, one per slot) */
    nl_tensor *input;             /* last input (a reference), for backward and feature maps */
    nl_tensor *output;            /* last output (a reference) */
    void *state;                  /* type-specific */
    nl_tensor *grad_input;        /* last dL/dx from nl_module_grad_buffer (a reference), reused */
    struct nl_store *store;       /* the parameter store when m was packed as a network (owned) */
};

/* Every module type, for lookups by name (Lua constructors, checkpoints, help). */
extern const nl_module_type *const nl_module_types[];
const nl_module_type *nl_module_type_find(const char *name);
/* Registers a type defined at run time (a layer written in Lua), found by nl_module_type_find
 * (and so by checkpoints) from then on; a later registration of the same name wins. t must live
 * as long as the process (modules point to it). NL_EINVAL for a built-in name or a type without
 * forward, backward or infer. */
nl_status nl_module_type_register(const nl_module_type *t);

/* Creates a module: args has one value per argspec in order (use nl_module_default_args to
 * fill defaults first; NULL: all defaults). Validates them (NL_EINVAL naming the type, the
 * argument and the value). New reference, or NULL with the error set. */
nl_module *nl_module_new(const nl_module_type *type, const double *args);
void nl_module_default_args(const nl_module_type *type, double *args);
/* Index of an argument by name, or -1. */
int nl_module_arg_index(const nl_module_type *type, const char *name);
nl_module *nl_module_retain(nl_module *m);
/* A deep copy of m on m's device: the same types and arguments, children, every parameter and
 * buffer (masks included) and the training flag; the RNG stream is left as it was. New
 * reference, or NULL with the error set. */
nl_module *nl_module_clone(const nl_module *m);
void nl_module_release(nl_module *m);

/* Containers: appends / inserts (0-based) / removes a child (the container takes a reference).
 * NL_EINVAL when the network would nest deeper than NL_MAX_DEPTH. */
nl_status nl_module_add(nl_module *c, nl_module *child);
nl_status nl_module_insert(nl_module *c, int index, nl_module *child);
nl_status nl_module_remove(nl_module *c, int index);
/* Puts child in place of c's child index (c takes a reference, the old child loses one).
 * NL_EINVAL for a bad position, a cycle or nesting deeper than NL_MAX_DEPTH (c unchanged). */
nl_status nl_module_replace(nl_module *c, int index, nl_module *child);
/* A module appears at most once in a tree: insert refuses a child sharing a module with the
 * container; this check (run by nl_optim_new) catches a module added to an inner container after
 * that container was nested. NL_EINVAL naming the module. */
nl_status nl_module_check_unique(const nl_module *m);

/* Adds a parameter (grad allocated and zeroed when with_grad) to m during init. m takes its own
 * reference to value (the caller releases its own). NL_EINVAL for a duplicate or long name. */
nl_status nl_module_add_param(nl_module *m, const char *name, nl_tensor *value, bool with_grad);
nl_param *nl_module_param(nl_module *m, const char *name);
/* Removes parameter i of m (a buffer such as a pruning mask: it has no gradient). */
void nl_module_remove_param(nl_module *m, int i);

/* The forward/backward entry points: keep m->input/m->output, check interrupts, then dispatch
 * to the type. Containers call these for their children. backward's gx may be NULL when the
 * caller does not need dL/dx (a training step on the whole net): parameter gradients only. */
nl_status nl_module_forward(nl_module *m, nl_tensor *x, nl_tensor **y);
nl_status nl_module_backward(nl_module *m, nl_tensor *gy, nl_tensor **gx);
nl_status nl_module_infer(const nl_module *m, int ndim, const int64_t *in, int *out_ndim,
                          int64_t *out, int64_t *macs);

void nl_module_train(nl_module *m, bool training);  /* recursive */
nl_status nl_module_zero_grad(nl_module *m);        /* recursive */
/* Every parameter of m and its children, depth-first (buffers included when with_buffers).
 * Fills up to max pointers, returns the total count. Pointers stay valid while m lives. */
int nl_module_params(nl_module *m, nl_param **out, int max, bool with_buffers);
/* "Conv2d(3, 32, k=3, stride=1, padding=1)" */
void nl_module_repr(const nl_module *m, char *buf, size_t n);
/* Moves every parameter, gradient and buffer, and each layer's own state (type->to), to dev (in
 * place: the tensors are replaced). Parameter by parameter, so a parameter store can take it
 * over. NL_EUNSUPPORTED, naming the layer, for a CPU-only layer (int8 / int4) and a device other
 * than the CPU; nothing is moved then. */
nl_status nl_module_to(nl_module *m, nl_device dev);
/* The device of m's first parameter or buffer, depth-first (NL_CPU for a module without any). */
nl_device nl_module_device(const nl_module *m);
/* Replaces *t by a copy on dev (no-op when already there or NULL): for type->to. */
nl_status nl_tensor_move(nl_tensor **t, nl_device dev);

/* Output tensor reuse: returns m's previous output if it has this shape, dtype and device and
 * nobody else holds it, else a new tensor (new reference either way). Keeps the training step
 * allocation-free after the first step. */
nl_tensor *nl_module_output_buffer(nl_module *m, nl_dtype dtype, int ndim, const int64_t *shape,
                                   nl_device dev);
/* The same for dL/dx in backward: m->grad_input if it fits and nobody else holds it, else a new
 * tensor that m keeps in grad_input (new reference either way; NULL with the error set). */
nl_tensor *nl_module_grad_buffer(nl_module *m, nl_dtype dtype, int ndim, const int64_t *shape,
                                 nl_device dev);

/* ---------------------------------------------------------------- the parameter store --- */

/* One network's trainable parameters in two contiguous f32 blocks on their device (llm.c's
 * layout): values and gradients, parameter i at elements [offset[i], offset[i + 1]) of each, in
 * nl_module_params(net, ..., false) order. Each parameter's value and grad tensor is a view on
 * them (the same tensor objects as before packing, so holders keep seeing the parameter), so an
 * optimizer step, a gradient norm or an all-reduce is one operation over a block. */
typedef struct nl_store {
    int count;
    nl_param **params;    /* count (borrowed from the modules) */
    int64_t *offset;      /* count + 1: the last is the total */
    nl_tensor *values;    /* f32 [total] */
    nl_tensor *grads;     /* f32 [total] */
    uint64_t generation;  /* different for every store built in this process */
    nl_param **scratch;   /* count + 1: the listing each call compares with params */
    nl_tensor *norm, *norm_sq, *norm_part; /* kept for the gradient norm (core/train/optim.c) */
} nl_store;

/* The store of net, packed now if net has none or its parameters are no longer views on it (a
 * layer added or removed, channel pruning, low-rank, a move to another device replaced them):
 * values and gradients are copied into the new blocks. Borrowed: valid until net is released or
 * the next call. NULL with NL_EINVAL (a parameter that is not f32 or whose gradient has another
 * shape), NL_EDEVICE (parameters on several devices) or NL_ENOMEM; the parameters then keep their
 * values. */
nl_store *nl_module_store(nl_module *net);
/* The index of the parameter whose value or gradient block holds element e (0 <= e < total). */
int nl_store_find(const nl_store *s, int64_t e);
void nl_store_free(nl_store *s);

/* Sums n doubles in place over the processes of a data-parallel job: SyncBatchNorm's statistics.
 * The distributed layer sets it when a job has several ranks; NULL (one process) by default. */
typedef nl_status (*nl_sync_sum_fn)(double *v, int n);
void nl_set_sync_sum(nl_sync_sum_fn fn);
/* Turns every BatchNorm1d and BatchNorm2d of net into a SyncBatchNorm (in place: the same
 * arguments, parameters and state). Returns how many it turned. */
int nl_batchnorm_make_sync(nl_module *net);

/* A function called after each module's backward has added its parameters' gradients (the
 * gradient exchange starts its buckets there); fn NULL removes it. One per thread. */
void nl_module_set_backward_hook(void (*fn)(void *ctx, nl_module *m), void *ctx);

/* ---------------------------------------------------------------- losses ---------------- */

/* Losses are not modules: they take (input, target) and return a scalar. */
typedef enum { NL_LOSS_CROSS_ENTROPY, NL_LOSS_MSE, NL_LOSS_DISTILL, NL_LOSS_CUSTOM } nl_loss_kind;

/* A loss computed by callbacks (one written in Lua: nn.Loss). forward gives the loss of input for
 * target; backward dL/dinput (a new reference) for the last forward's input and target, scaled by
 * grad; release frees ctx (from nl_loss_clear). Errors as statuses with the message set. */
typedef struct {
    nl_status (*forward)(void *ctx, nl_tensor *input, nl_tensor *target, double *loss);
    nl_status (*backward)(void *ctx, nl_tensor *input, nl_tensor *target, double grad,
                          nl_tensor **ginput);
    void (*release)(void *ctx);
} nl_loss_ops;

typedef struct {
    nl_loss_kind kind;
    double label_smoothing;   /* cross-entropy */
    nl_tensor *saved;         /* what backward needs (probabilities / difference / gradient) */
    nl_tensor *target;
    /* Distillation (Hinton et al. 2015, as Distiller): alpha * T^2 * KL(softmax(t / T) ||
     * softmax(s / T)) averaged over the batch + (1 - alpha) * cross-entropy(s, target), with s the
     * input (the student's logits) and t = teacher(batch) run in eval mode. teacher is a reference
     * (nl_loss_clear releases it); batch is the input the student was given, borrowed: the caller
     * sets it before each forward (nl_train_step and nl_eval_batch do) and the forward clears it. */
    nl_module *teacher;
    double temperature, alpha;
    nl_tensor *batch;
    nl_tensor *work, *mean, *grad; /* kept between calls: per-sample losses, their mean, dL/dinput */
    /* When set (a 0-d f32 tensor on the input's device, borrowed), the forward of cross-entropy,
     * MSE and distillation leaves the loss there unread and returns NaN: nl_train_step reads it
     * back later with the step's other scalars, in one transfer. */
    nl_tensor *into;
#define NL_LOSS_DIST_BUFS 5
    nl_tensor *dist[NL_LOSS_DIST_BUFS]; /* kept: distillation's work buffers */
#define NL_LOSS_STEP_BUFS 6
    nl_tensor *step[NL_LOSS_STEP_BUFS]; /* kept for nl_train_step on a device (core/train/train.c) */
    const nl_loss_ops *ops; /* NL_LOSS_CUSTOM: its callbacks and their context */
    void *ctx;
} nl_loss;

/* Cross-entropy: logits [N, C], target i32 class indices [N] (0-based) or f32 probabilities
 * [N, C]; mean over the batch. MSE: same shapes, mean over all elements. Distillation: as
 * cross-entropy, with l->teacher and l->batch set. */
nl_status nl_loss_forward(nl_loss *l, nl_tensor *input, nl_tensor *target, double *loss);
/* After a forward whose loss is NaN: NL_EINVAL naming the first class index out of range when
 * the target holds class indices on a device (read on the host: the kernels mark such a class
 * with NaN, and a host target was checked before), else NL_OK. */
nl_status nl_loss_explain_nan(const nl_loss *l);
/* dL/dinput (new reference), scaled by grad (1 for a plain backward). */
nl_status nl_loss_backward(nl_loss *l, double grad, nl_tensor **ginput);
/* Releases what the loss holds (saved tensors, the teacher, a custom loss's context). */
void nl_loss_clear(nl_loss *l);

#endif
