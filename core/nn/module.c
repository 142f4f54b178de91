/* module.c: the module framework: the table of module types, construction with argument
 * validation, reference counting, containers, parameters, printing, and the forward/backward entry
 * points that check the input, keep each module's last input and output and poll for Ctrl-C. */
#include "layer.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- the type table -------- */

/* Each layer's file defines its type; one declaration and one list entry per type. */
extern const nl_module_type nl_sequential_type;
extern const nl_module_type nl_residual_type;
extern const nl_module_type nl_linear_type;
extern const nl_module_type nl_conv2d_type;
extern const nl_module_type nl_maxpool2d_type;
extern const nl_module_type nl_avgpool2d_type;
extern const nl_module_type nl_globalavgpool_type;
extern const nl_module_type nl_flatten_type;
extern const nl_module_type nl_identity_type;
extern const nl_module_type nl_relu_type;
extern const nl_module_type nl_leaky_relu_type;
extern const nl_module_type nl_gelu_type;
extern const nl_module_type nl_sigmoid_type;
extern const nl_module_type nl_tanh_type;
extern const nl_module_type nl_softmax_type;
extern const nl_module_type nl_batchnorm1d_type;
extern const nl_module_type nl_batchnorm2d_type;
extern const nl_module_type nl_syncbatchnorm_type;
extern const nl_module_type nl_dropout_type;
extern const nl_module_type nl_quantize_type;
extern const nl_module_type nl_dequantize_type;
extern const nl_module_type nl_qconv2d_type;
extern const nl_module_type nl_qlinear_type;
extern const nl_module_type nl_qmaxpool2d_type;
extern const nl_module_type nl_int4linear_type;
extern const nl_module_type nl_int4conv2d_type;
extern const nl_module_type nl_fakequant_type;
extern const nl_module_type nl_qatlinear_type;
extern const nl_module_type nl_qatconv2d_type;

const nl_module_type *const nl_module_types[] = {
    &nl_sequential_type,
    &nl_residual_type,
    &nl_linear_type,
    &nl_conv2d_type,
    &nl_maxpool2d_type,
    &nl_avgpool2d_type,
    &nl_globalavgpool_type,
    &nl_flatten_type,
    &nl_identity_type,
    &nl_relu_type,
    &nl_leaky_relu_type,
    &nl_gelu_type,
    &nl_sigmoid_type,
    &nl_tanh_type,
    &nl_softmax_type,
    &nl_batchnorm1d_type,
    &nl_batchnorm2d_type,
    &nl_syncbatchnorm_type,
    &nl_dropout_type,
    &nl_quantize_type,
    &nl_dequantize_type,
    &nl_qconv2d_type,
    &nl_qlinear_type,
    &nl_qmaxpool2d_type,
    &nl_int4linear_type,
    &nl_int4conv2d_type,
    &nl_fakequant_type,
    &nl_qatlinear_type,
    &nl_qatconv2d_type,
    NULL,
};

/* Types registered at run time (layers defined in Lua), newest definition of a name last. */
static const nl_module_type **defined_types;
static int ndefined;

static const nl_module_type *builtin_type(const char *name)
{
    for (int i = 0; name && nl_module_types[i]; i++)
        if (strcmp(nl_module_types[i]->name, name) == 0) return nl_module_types[i];
    return NULL;
}

const nl_module_type *nl_module_type_find(const char *name)
{
    const nl_module_type *t = builtin_type(name);
    for (int i = ndefined - 1; !t && name && i >= 0; i--)
        if (strcmp(defined_types[i]->name, name) == 0) t = defined_types[i];
    return t;
}

nl_status nl_module_type_register(const nl_module_type *t)
{
    if (!t || !t->name || !t->forward || !t->backward || !t->infer)
        return nl_seterr(NL_EINVAL, "module type: a name, forward, backward and infer are required");
    if (builtin_type(t->name))
        return nl_seterr(NL_EINVAL, "module type: '%s' is a built-in layer; choose another name", t->name);
    const nl_module_type **d = realloc(defined_types, (size_t)(ndefined + 1) * sizeof *d);
    if (!d) return nl_seterr(NL_ENOMEM, "module type: out of memory");
    defined_types = d;
    defined_types[ndefined++] = t;
    return NL_OK;
}

/* ---------------------------------------------------------------- construction ---------- */

static int count_args(const nl_module_type *type)
{
    int n = 0;
    while (n < NL_MAX_ARGS && type->args[n].name) n++;
    return n;
}

int nl_module_arg_index(const nl_module_type *type, const char *name)
{
    for (int i = 0; name && i < count_args(type); i++)
        if (strcmp(type->args[i].name, name) == 0) return i;
    return -1;
}

void nl_module_default_args(const nl_module_type *type, double *args)
{
    for (int i = 0; i < count_args(type); i++) args[i] = type->args[i].def;
}

/* NL_EINVAL naming the type, the argument and the value unless v fits argument i. */
static nl_status check_arg(const nl_module_type *type, int i, double v)
{
    const nl_argspec *a = &type->args[i];
    if (isnan(v) && i >= type->npos && isnan(a->def)) return NL_OK; /* derived by init */
    if (isnan(v) && i < type->npos)
        return nl_seterr(NL_EINVAL, "%s: %s is required (%s)", type->name, a->name, type->sig);
    if (a->boolean) {
        if (v != 0 && v != 1)
            return nl_seterr(NL_EINVAL, "%s: %s must be true or false, got %g", type->name, a->name, v);
        return NL_OK;
    }
    if (a->integer && (v != floor(v) || v < a->min))
        return nl_seterr(NL_EINVAL, "%s: %s must be a whole number >= %g, got %g", type->name,
                         a->name, a->min, v);
    if (!a->integer && !(v >= a->min && isfinite(v)))
        return nl_seterr(NL_EINVAL, "%s: %s must be a number >= %g, got %g", type->name, a->name,
                         a->min, v);
    if (a->integer && v > INT32_MAX)
        return nl_seterr(NL_EINVAL, "%s: %s = %g is too large (at most %d)", type->name, a->name, v,
                         INT32_MAX);
    return NL_OK;
}

nl_module *nl_module_new(const nl_module_type *type, const double *args)
{
    if (!type) {
        nl_seterr(NL_EINVAL, "module: no type given");
        return NULL;
    }
    const int nargs = count_args(type);
    double a[NL_MAX_ARGS];
    nl_module_default_args(type, a);
    if (args) memcpy(a, args, (size_t)nargs * sizeof *a);
    for (int i = 0; i < nargs; i++)
        if (check_arg(type, i, a[i]) != NL_OK) return NULL;
    nl_module *m = calloc(1, sizeof *m);
    if (!m) {
        nl_seterr(NL_ENOMEM, "%s: out of memory", type->name);
        return NULL;
    }
    m->type = type;
    m->refcount = 1;
    m->training = true;
    memcpy(m->args, a, (size_t)nargs * sizeof *a);
    if (type->init && type->init(m) != NL_OK) {
        nl_module_release(m); /* keeps the init's message: releasing sets no error */
        return NULL;
    }
    return m;
}

/* Copies m's parameters and buffers into c (same device): by name, adding those c lacks. */
static nl_status copy_params(nl_module *c, const nl_module *m)
{
    nl_status st = NL_OK;
    for (int i = 0; i < m->nparams && st == NL_OK; i++) {
        const nl_param *p = &m->params[i];
        nl_param *q = nl_module_param(c, p->name);
        if (q && nl_same_shape(q->value, p->value) && q->value->dtype == p->value->dtype) {
            st = nl_copy(q->value, p->value);
        } else if (q) {
            st = nl_seterr(NL_EINVAL, "clone: %s's %s does not follow from its arguments",
                           m->type->name, p->name);
        } else {
            nl_tensor *t = nl_tensor_clone(p->value);
            st = t ? nl_module_add_param(c, p->name, t, p->grad != NULL) : nl_errcode();
            nl_tensor_release(t);
        }
    }
    return st;
}

nl_module *nl_module_clone(const nl_module *m)
{
    const nl_rng_state rng = nl_rng_get_state(); /* the initial weights are overwritten */
    nl_module *c = nl_module_new(m->type, m->args);
    nl_rng_set_state(rng);
    nl_status st = c ? NL_OK : nl_errcode();
    for (int i = 0; i < m->nchildren && st == NL_OK; i++) {
        nl_module *k = nl_module_clone(m->children[i]);
        st = k ? nl_module_add(c, k) : nl_errcode();
        nl_module_release(k);
    }
    nl_device dev = nl_module_device(m);
    if (st == NL_OK && dev != NL_CPU) st = nl_module_to(c, dev);
    if (st == NL_OK) st = copy_params(c, m);
    if (st != NL_OK) {
        nl_module_release(c);
        return NULL;
    }
    nl_module_train(c, m->training);
    return c;
}

nl_module *nl_module_retain(nl_module *m)
{
    if (m) m->refcount++;
    return m;
}

/* Forgets one slot of parent holding m. */
static void unlink_parent(nl_module *m, const nl_module *parent)
{
    for (int i = 0; i < m->nparents; i++)
        if (m->parents[i] == parent) {
            m->parents[i] = m->parents[--m->nparents];
            return;
        }
}

void nl_module_release(nl_module *m)
{
    if (!m || --m->refcount > 0) return;
    for (int i = 0; i < m->nchildren; i++) {
        unlink_parent(m->children[i], m);
        nl_module_release(m->children[i]);
    }
    free(m->children);
    free(m->parents);
    for (int i = 0; i < m->nparams; i++) {
        nl_tensor_release(m->params[i].value);
        nl_tensor_release(m->params[i].grad);
    }
    nl_tensor_release(m->input);
    nl_tensor_release(m->output);
    nl_tensor_release(m->grad_input);
    nl_store_free(m->store);
    if (m->type->destroy) m->type->destroy(m);
    free(m);
}

/* ---------------------------------------------------------------- containers ------------ */

static bool contains(const nl_module *m, const nl_module *target)
{
    if (m == target) return true;
    for (int i = 0; i < m->nchildren; i++)
        if (contains(m->children[i], target)) return true;
    return false;
}

/* Levels from m down to its deepest leaf (a leaf: 1). */
static int height(const nl_module *m)
{
    int h = 0;
    for (int i = 0; i < m->nchildren; i++) {
        int k = height(m->children[i]);
        if (k > h) h = k;
    }
    return h + 1;
}

/* Levels from the outermost container holding m down to m (m alone: 1). */
static int depth_above(const nl_module *m)
{
    int d = 0;
    for (int i = 0; i < m->nparents; i++) {
        int k = depth_above(m->parents[i]);
        if (k > d) d = k;
    }
    return d + 1;
}

/* Puts child (a new reference) in slot ch[index] of c, recording c as one of its parents. */
static nl_status link_child(nl_module *c, nl_module *child, const char *what)
{
    int depth = depth_above(c) + height(child);
    if (depth > NL_MAX_DEPTH)
        return nl_seterr(NL_EINVAL, "%s: %s would nest the network %d levels deep (at most %d)",
                         c->type->name, what, depth, NL_MAX_DEPTH);
    nl_module **p = realloc(child->parents, (size_t)(child->nparents + 1) * sizeof *p);
    if (!p) return nl_seterr(NL_ENOMEM, "%s: out of memory adding a module", c->type->name);
    p[child->nparents++] = c;
    child->parents = p;
    return NL_OK;
}

/* A module of b's tree that is also in a's tree (NULL when they share none). */
static const nl_module *shared_module(const nl_module *a, const nl_module *b)
{
    if (contains(a, b)) return b;
    for (int i = 0; i < b->nchildren; i++) {
        const nl_module *d = shared_module(a, b->children[i]);
        if (d) return d;
    }
    return NULL;
}

nl_status nl_module_check_unique(const nl_module *m)
{
    for (int i = 0; i < m->nchildren; i++) {
        for (int j = 0; j < i; j++) {
            const nl_module *dup = shared_module(m->children[j], m->children[i]);
            if (dup) {
                char repr[160];
                nl_module_repr(dup, repr, sizeof repr);
                return nl_seterr(NL_EINVAL, "%s appears twice in the network; the same module used "
                                 "twice (weight tying) is not supported", repr);
            }
        }
        nl_status st = nl_module_check_unique(m->children[i]);
        if (st != NL_OK) return st;
    }
    return NL_OK;
}

nl_status nl_module_insert(nl_module *c, int index, nl_module *child)
{
    if (!c || !child) return nl_seterr(NL_EINVAL, "module: insert needs a container and a module");
    if (!c->type->container)
        return nl_seterr(NL_EINVAL, "%s: not a container (only Sequential and Residual hold modules)",
                         c->type->name);
    if (index < 0 || index > c->nchildren)
        return nl_seterr(NL_EINVAL, "%s: position %d is out of range (0 to %d)", c->type->name,
                         index, c->nchildren);
    if (contains(child, c))
        return nl_seterr(NL_EINVAL, "%s: cannot hold itself or a module that contains it",
                         c->type->name);
    const nl_module *dup = shared_module(c, child);
    if (dup) {
        char repr[160];
        nl_module_repr(dup, repr, sizeof repr);
        return nl_seterr(NL_EINVAL, "%s: %s is already in this network; the same module used twice "
                         "(weight tying) is not supported: make a second layer, or copy it with "
                         ":clone() for an independent one", c->type->name, repr);
    }
    nl_module **ch = realloc(c->children, (size_t)(c->nchildren + 1) * sizeof *ch);
    if (!ch) return nl_seterr(NL_ENOMEM, "%s: out of memory adding a module", c->type->name);
    c->children = ch;
    nl_status st = link_child(c, child, "adding this module");
    if (st != NL_OK) return st;
    memmove(ch + index + 1, ch + index, (size_t)(c->nchildren - index) * sizeof *ch);
    ch[index] = nl_module_retain(child);
    c->children = ch;
    c->nchildren++;
    return NL_OK;
}

nl_status nl_module_add(nl_module *c, nl_module *child)
{
    return nl_module_insert(c, c ? c->nchildren : 0, child);
}

nl_status nl_module_replace(nl_module *c, int index, nl_module *child)
{
    if (!c || !child || index < 0 || index >= c->nchildren)
        return nl_seterr(NL_EINVAL, "module: replace needs a container, a position in it and a module");
    nl_module *old = c->children[index];
    if (old == child) return NL_OK;
    if (contains(child, c))
        return nl_seterr(NL_EINVAL, "%s: cannot hold itself or a module that contains it",
                         c->type->name);
    unlink_parent(old, c);
    nl_status st = link_child(c, child, "this module");
    if (st != NL_OK) {
        (void)link_child(c, old, "the module replaced"); /* restores the slot just freed */
        return st;
    }
    c->children[index] = nl_module_retain(child);
    nl_module_release(old);
    return NL_OK;
}

nl_status nl_module_remove(nl_module *c, int index)
{
    if (!c) return nl_seterr(NL_EINVAL, "module: remove needs a container");
    if (index < 0 || index >= c->nchildren)
        return nl_seterr(NL_EINVAL, "%s: position %d is out of range (it holds %d modules)",
                         c->type->name, index, c->nchildren);
    unlink_parent(c->children[index], c);
    nl_module_release(c->children[index]);
    memmove(c->children + index, c->children + index + 1,
            (size_t)(c->nchildren - index - 1) * sizeof *c->children);
    c->nchildren--;
    return NL_OK;
}

/* ---------------------------------------------------------------- parameters ------------ */

nl_param *nl_module_param(nl_module *m, const char *name)
{
    for (int i = 0; m && name && i < m->nparams; i++)
        if (strcmp(m->params[i].name, name) == 0) return &m->params[i];
    return NULL;
}

nl_status nl_module_add_param(nl_module *m, const char *name, nl_tensor *value, bool with_grad)
{
    if (m->nparams >= NL_MAX_PARAMS)
        return nl_seterr(NL_EINVAL, "%s: more than %d parameters", m->type->name, NL_MAX_PARAMS);
    if (strlen(name) >= sizeof m->params[0].name || nl_module_param(m, name))
        return nl_seterr(NL_EINVAL, "%s: parameter name '%s' is too long or already used",
                         m->type->name, name);
    nl_tensor *grad = NULL;
    if (with_grad &&
        !(grad = nl_tensor_zeros(value->dtype, value->ndim, value->shape, nl_tensor_device(value))))
        return nl_errcode();
    nl_param *p = &m->params[m->nparams++];
    snprintf(p->name, sizeof p->name, "%s", name);
    p->value = nl_tensor_retain(value);
    p->grad = grad;
    return NL_OK;
}

void nl_module_remove_param(nl_module *m, int i)
{
    nl_tensor_release(m->params[i].value);
    nl_tensor_release(m->params[i].grad);
    memmove(&m->params[i], &m->params[i + 1], (size_t)(m->nparams - i - 1) * sizeof m->params[0]);
    m->nparams--;
}

static int collect_params(nl_module *m, nl_param **out, int max, int n, bool with_buffers)
{
    for (int i = 0; i < m->nparams; i++) {
        if (!m->params[i].grad && !with_buffers) continue;
        if (n < max) out[n] = &m->params[i];
        n++;
    }
    for (int i = 0; i < m->nchildren; i++) n = collect_params(m->children[i], out, max, n, with_buffers);
    return n;
}

int nl_module_params(nl_module *m, nl_param **out, int max, bool with_buffers)
{
    return m ? collect_params(m, out, out ? max : 0, 0, with_buffers) : 0;
}

nl_status nl_module_zero_grad(nl_module *m)
{
    for (int i = 0; i < m->nparams; i++) {
        nl_status st = m->params[i].grad ? nl_fill(m->params[i].grad, 0) : NL_OK;
        if (st != NL_OK) return st;
    }
    for (int i = 0; i < m->nchildren; i++) {
        nl_status st = nl_module_zero_grad(m->children[i]);
        if (st != NL_OK) return st;
    }
    return NL_OK;
}

void nl_module_train(nl_module *m, bool training)
{
    m->training = training;
    for (int i = 0; i < m->nchildren; i++) nl_module_train(m->children[i], training);
}

/* The device of m's first parameter (depth-first); false when m has none. */
static bool params_device(const nl_module *m, nl_device *dev)
{
    if (m->nparams > 0) {
        *dev = nl_tensor_device(m->params[0].value);
        return true;
    }
    for (int i = 0; i < m->nchildren; i++)
        if (params_device(m->children[i], dev)) return true;
    return false;
}

nl_device nl_module_device(const nl_module *m)
{
    nl_device dev = NL_CPU;
    params_device(m, &dev);
    return dev;
}

nl_status nl_tensor_move(nl_tensor **t, nl_device dev)
{
    if (!*t || nl_tensor_device(*t) == dev) return NL_OK;
    nl_tensor *moved = nl_tensor_to_device(*t, dev);
    if (!moved) return nl_errcode();
    nl_tensor_release(*t);
    *t = moved;
    return NL_OK;
}

/* NL_EUNSUPPORTED when m or a layer inside it runs on the CPU only and dev is not the CPU. */
static nl_status check_cpu_only(const nl_module *m, nl_device dev)
{
    if (m->type->cpu_only && dev != NL_CPU)
        return nl_seterr(NL_EUNSUPPORTED, "to: %s runs on the CPU only (integer kernels); a quantized "
                         "network stays on the CPU (quantize the float network after training on %s)",
                         m->type->name, nl_device_name(dev));
    for (int i = 0; i < m->nchildren; i++) {
        nl_status st = check_cpu_only(m->children[i], dev);
        if (st != NL_OK) return st;
    }
    return NL_OK;
}

static nl_status module_to(nl_module *m, nl_device dev)
{
    for (int i = 0; i < m->nparams; i++) {
        nl_status st = nl_tensor_move(&m->params[i].value, dev);
        if (st == NL_OK) st = nl_tensor_move(&m->params[i].grad, dev);
        if (st != NL_OK) return st;
    }
    if (m->type->to) {
        nl_status st = m->type->to(m, dev);
        if (st != NL_OK) return st;
    }
    /* The last input and output live on the old device: a backward now would mix devices. */
    nl_tensor_release(m->input);
    nl_tensor_release(m->output);
    nl_tensor_release(m->grad_input);
    m->input = m->output = m->grad_input = NULL;
    for (int i = 0; i < m->nchildren; i++) {
        nl_status st = module_to(m->children[i], dev);
        if (st != NL_OK) return st;
    }
    return NL_OK;
}

nl_status nl_module_to(nl_module *m, nl_device dev)
{
    if (!nl_backend_get(dev)) return nl_errcode();
    nl_status st = check_cpu_only(m, dev);
    return st == NL_OK ? module_to(m, dev) : st;
}

/* ---------------------------------------------------------------- forward / backward ---- */

static _Thread_local struct {
    void (*fn)(void *ctx, nl_module *m);
    void *ctx;
} backward_hook;

void nl_module_set_backward_hook(void (*fn)(void *ctx, nl_module *m), void *ctx)
{
    backward_hook.fn = fn;
    backward_hook.ctx = ctx;
}

nl_status nl_module_infer(const nl_module *m, int ndim, const int64_t *in, int *out_ndim,
                          int64_t *out, int64_t *macs)
{
    int64_t unused;
    return m->type->infer(m, ndim, in, out_ndim, out, macs ? macs : &unused);
}

/* NL_ETYPE / NL_EDEVICE unless t is f32 on the device of m's parameters. */
static nl_status check_tensor(const nl_module *m, const nl_tensor *t, const char *what)
{
    if (t->dtype != NL_F32)
        return nl_seterr(NL_ETYPE, "%s: %s must be f32, got %s", m->type->name, what,
                         nl_dtype_info(t->dtype)->name);
    nl_device dev;
    if (params_device(m, &dev) && nl_tensor_device(t) != dev)
        return nl_seterr(NL_EDEVICE, "%s: %s is on %s but the parameters are on %s", m->type->name,
                         what, nl_device_name(nl_tensor_device(t)), nl_device_name(dev));
    return NL_OK;
}

nl_status nl_module_forward(nl_module *m, nl_tensor *x, nl_tensor **y)
{
    *y = NULL;
    if (!m || !x) return nl_seterr(NL_EINVAL, "forward: needs a module and an input");
    nl_status st = nl_check_interrupt();
    if (st == NL_OK && !(m->type->any_input_dtype && x->dtype != NL_F32))
        st = check_tensor(m, x, "input");
    int out_ndim;
    int64_t out_shape[NL_MAX_DIMS];
    if (st == NL_OK) st = nl_module_infer(m, x->ndim, x->shape, &out_ndim, out_shape, NULL);
    if (st != NL_OK) return st;
    nl_tensor *xc = nl_tensor_contiguous(x);
    if (!xc) return nl_errcode();
    nl_tensor_release(m->input);
    m->input = xc;
    nl_tensor *out = NULL;
    st = m->type->forward(m, xc, &out);
    nl_tensor_release(m->output);
    m->output = st == NL_OK ? nl_tensor_retain(out) : NULL; /* no backward after a failed forward */
    *y = out;
    return st;
}

nl_status nl_module_backward(nl_module *m, nl_tensor *gy, nl_tensor **gx)
{
    if (gx) *gx = NULL;
    if (!m || !gy) return nl_seterr(NL_EINVAL, "backward: needs a module and a gradient");
    nl_status st = nl_check_interrupt();
    if (st != NL_OK) return st;
    if (!m->input || !m->output)
        return nl_seterr(NL_EINVAL, "%s: backward before a successful forward", m->type->name);
    if (!nl_same_shape(gy, m->output)) {
        char g[128], o[128];
        return nl_seterr(NL_ESHAPE, "%s: gradient has shape %s, expected the output's shape %s",
                         m->type->name, nl_shape_str(g, sizeof g, gy->ndim, gy->shape),
                         nl_shape_str(o, sizeof o, m->output->ndim, m->output->shape));
    }
    if ((st = check_tensor(m, gy, "gradient")) != NL_OK) return st;
    nl_tensor *gyc = nl_tensor_contiguous(gy);
    if (!gyc) return nl_errcode();
    nl_tensor *dropped = NULL;
    st = m->type->backward(m, gyc, gx || m->type->input_grad_optional ? gx : &dropped);
    nl_tensor_release(dropped);
    nl_tensor_release(gyc);
    if (st == NL_OK && backward_hook.fn && m->nparams > 0) backward_hook.fn(backward_hook.ctx, m);
    return st;
}

/* Whether t (held by one reference only, a module's) can be reused as a buffer of this kind. */
static bool reusable(const nl_tensor *t, nl_dtype dtype, int ndim, const int64_t *shape, nl_device dev)
{
    return t && t->refcount == 1 && t->storage->refcount == 1 && t->dtype == dtype &&
           t->ndim == ndim && nl_tensor_device(t) == dev && nl_tensor_is_contiguous(t) &&
           memcmp(t->shape, shape, (size_t)ndim * sizeof *shape) == 0;
}

nl_tensor *nl_module_output_buffer(nl_module *m, nl_dtype dtype, int ndim, const int64_t *shape,
                                   nl_device dev)
{
    if (reusable(m->output, dtype, ndim, shape, dev)) return nl_tensor_retain(m->output);
    return nl_tensor_empty(dtype, ndim, shape, dev);
}

nl_tensor *nl_module_grad_buffer(nl_module *m, nl_dtype dtype, int ndim, const int64_t *shape,
                                 nl_device dev)
{
    if (!reusable(m->grad_input, dtype, ndim, shape, dev)) {
        nl_tensor_release(m->grad_input);
        if (!(m->grad_input = nl_tensor_empty(dtype, ndim, shape, dev))) return NULL;
    }
    return nl_tensor_retain(m->grad_input);
}

/* ---------------------------------------------------------------- printing -------------- */

/* Appends printf output to buf (size n) at *used, truncating silently. */
static void append(char *buf, size_t n, size_t *used, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void append(char *buf, size_t n, size_t *used, const char *fmt, ...)
{
    if (*used >= n) return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf + *used, n - *used, fmt, ap);
    va_end(ap);
    if (k > 0) *used += (size_t)k < n - *used ? (size_t)k : n - *used - 1;
}

/* "Conv2d(3, 32, k=3, stride=1, padding=1)": the first two positional arguments (a layer's in and
 * out sizes) bare, the others as name=value; options are left out at their default unless they
 * are sizes (whole numbers >= 1, like stride). Containers list their children, one a line. */
static void repr_into(const nl_module *m, char *buf, size_t n, size_t *used, int indent)
{
    const nl_module_type *t = m->type;
    append(buf, n, used, "%s(", t->name);
    bool first = true;
    for (int i = 0; i < count_args(t); i++) {
        const nl_argspec *a = &t->args[i];
        double v = m->args[i];
        bool size = a->integer && !a->boolean && a->min >= 1;
        if (i >= t->npos && v == a->def && !size) continue;
        append(buf, n, used, "%s", first ? "" : ", ");
        first = false;
        if (i >= 2 || i >= t->npos) append(buf, n, used, "%s=", a->name);
        if (a->boolean) append(buf, n, used, "%s", v != 0 ? "true" : "false");
        else append(buf, n, used, "%.10g", v);
    }
    if (m->nchildren > 0) {
        for (int i = 0; i < m->nchildren; i++) {
            append(buf, n, used, "\n%*s(%d): ", 2 * (indent + 1), "", i + 1);
            repr_into(m->children[i], buf, n, used, indent + 1);
        }
        append(buf, n, used, "\n%*s", 2 * indent, "");
    }
    append(buf, n, used, ")");
}

void nl_module_repr(const nl_module *m, char *buf, size_t n)
{
    size_t used = 0;
    if (n == 0) return;
    buf[0] = '\0';
    repr_into(m, buf, n, &used, 0);
}

/* ---------------------------------------------------------------- layer helpers --------- */

nl_status nl_layer_uniform_param(nl_module *m, const char *name, int ndim, const int64_t *shape,
                                 double bound)
{
    nl_tensor *t = nl_tensor_empty(NL_F32, ndim, shape, NL_CPU);
    if (!t) return nl_errcode();
    nl_status st = nl_rand_uniform(t, -bound, bound);
    if (st == NL_OK) st = nl_module_add_param(m, name, t, true);
    nl_tensor_release(t);
    return st;
}

nl_tensor *nl_layer_buffer(nl_tensor **slot, nl_dtype dtype, int ndim, const int64_t *shape,
                           nl_device dev)
{
    nl_tensor *t = *slot;
    if (t && t->dtype == dtype && t->ndim == ndim && nl_tensor_device(t) == dev &&
        memcmp(t->shape, shape, (size_t)ndim * sizeof *shape) == 0)
        return t;
    nl_tensor_release(t);
    *slot = nl_tensor_empty(dtype, ndim, shape, dev);
    return *slot;
}

int64_t nl_layer_product(int n, const int64_t *factors)
{
    int64_t p = 1;
    for (int i = 0; i < n; i++)
        if (factors[i] < 0 || __builtin_mul_overflow(p, factors[i], &p)) return INT64_MAX;
    return p;
}

nl_status nl_layer_shape_error(const nl_module *m, int ndim, const int64_t *in, const char *fmt, ...)
{
    char msg[512], shape[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return nl_seterr(NL_ESHAPE, "%s: %s (input %s)", m->type->name, msg,
                     nl_shape_str(shape, sizeof shape, ndim, in));
}
