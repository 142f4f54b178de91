/* checkpoint.c: checkpoints of modules (architecture, parameters, buffers, pruning masks) and
 * optimizers (hyper-parameters, step count, state), stored as safetensors files. */
#include "checkpoint.h"
#include "prune.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CKPT_NAME_MAX 256

/* ---------------------------------------------------------------- module checkpoints ---- */

/* A parameter (or buffer) with its state_dict name. */
typedef struct {
    char name[CKPT_NAME_MAX];
    nl_param *p;
} ckpt_param;

typedef struct {
    ckpt_param *v;
    int n, cap;
} ckpt_list;

/* Appends m's parameters (and buffers when asked) and its children's, depth first, named as
 * PyTorch's state_dict names them: prefix + name, children under prefix + "<index>.". */
static nl_status collect(nl_module *m, const char *prefix, bool buffers, ckpt_list *out)
{
    for (int i = 0; i < m->nparams; i++) {
        nl_param *p = &m->params[i];
        if (!buffers && !p->grad) continue;
        if (!nl_st_grow((void **)&out->v, &out->cap, out->n + 1, sizeof *out->v))
            return nl_seterr(NL_ENOMEM, "checkpoint: out of memory");
        ckpt_param *c = &out->v[out->n];
        if (snprintf(c->name, sizeof c->name, "%s%s", prefix, p->name) >= (int)sizeof c->name)
            return nl_seterr(NL_EINVAL, "checkpoint: parameter name '%s%s' is too long", prefix,
                             p->name);
        c->p = p;
        out->n++;
    }
    for (int k = 0; k < m->nchildren; k++) {
        char sub[CKPT_NAME_MAX];
        if (snprintf(sub, sizeof sub, "%s%d.", prefix, k) >= (int)sizeof sub)
            return nl_seterr(NL_EINVAL, "checkpoint: the network is nested too deeply");
        nl_status st = collect(m->children[k], sub, buffers, out);
        if (st != NL_OK) return st;
    }
    return NL_OK;
}

nl_status nl_checkpoint_add_module(nl_st_writer *w, nl_module *net)
{
    char *arch = nl_checkpoint_arch_json(net);
    if (!arch) return nl_errcode();
    nl_status st = nl_st_writer_meta(w, NL_CKPT_VERSION, "1");
    if (st == NL_OK) st = nl_st_writer_meta(w, NL_CKPT_ARCH, arch);
    free(arch);
    ckpt_list ps = {0};
    if (st == NL_OK) st = collect(net, "", true, &ps);
    for (int i = 0; i < ps.n && st == NL_OK; i++)
        st = nl_st_writer_add(w, ps.v[i].name, ps.v[i].p->value);
    free(ps.v);
    return st;
}

/* The module among m and its children whose parameter p is. */
static nl_module *owner_of(nl_module *m, const nl_param *p)
{
    if (p >= m->params && p < m->params + m->nparams) return m;
    for (int i = 0; i < m->nchildren; i++) {
        nl_module *o = owner_of(m->children[i], p);
        if (o) return o;
    }
    return NULL;
}

/* Pruning masks (core/compress/prune.h): a u8 "<weight's name>_mask" of the weight's shape in the file
 * becomes its layer's mask again, so a loaded pruned network keeps its zeros through training. */
static nl_status load_masks(nl_st_file *f, nl_module *m, const ckpt_list *ps)
{
    nl_status st = NL_OK;
    for (int i = 0; i < ps->n && st == NL_OK; i++) {
        nl_param *p = ps->v[i].p;
        char name[CKPT_NAME_MAX + 8];
        snprintf(name, sizeof name, "%s_mask", ps->v[i].name);
        const nl_st_entry *e = NULL;
        for (int k = 0; k < nl_st_count(f) && !e && strcmp(p->name, "weight") == 0; k++)
            if (strcmp(nl_st_at(f, k)->name, name) == 0) e = nl_st_at(f, k);
        if (!e) continue;
        st = nl_st_check(f, name, NL_U8, p->value->ndim, p->value->shape, "a pruning mask needs");
        nl_tensor *t = st == NL_OK ? nl_st_get(f, name) : NULL;
        if (st == NL_OK) st = t ? nl_module_add_param(owner_of(m, p), NL_PRUNE_MASK, t, false) : nl_errcode();
        nl_tensor_release(t);
    }
    return st;
}

nl_module *nl_checkpoint_module_from(nl_st_file *f)
{
    const char *arch = nl_st_meta(f, NL_CKPT_ARCH);
    if (!arch) {
        nl_st_bad_file(nl_st_path(f), "no '%s' metadata: not an nnlab module checkpoint", NL_CKPT_ARCH);
        return NULL;
    }
    /* Every parameter and buffer comes from the file, so the network cannot need more bytes than
     * its data holds, twice over for the gradients that building allocates beside the parameters
     * (and 1 MiB spare for small scratch tensors). */
    nl_module *m = nl_checkpoint_arch_build(arch, nl_st_path(f), 2 * (int64_t)nl_st_data_size(f) + (1 << 20));
    if (!m) return NULL;
    ckpt_list ps = {0};
    nl_status st = collect(m, "", true, &ps);
    for (int i = 0; i < ps.n && st == NL_OK; i++) {
        const nl_tensor *v = ps.v[i].p->value;
        st = nl_st_check(f, ps.v[i].name, v->dtype, v->ndim, v->shape, "the architecture needs");
    }
    for (int i = 0; i < ps.n && st == NL_OK; i++)
        st = nl_st_read(f, ps.v[i].name, ps.v[i].p->value);
    if (st == NL_OK) st = load_masks(f, m, &ps);
    free(ps.v);
    if (st != NL_OK) {
        nl_module_release(m);
        return NULL;
    }
    return m;
}

nl_module *nl_checkpoint_load_module(const char *path)
{
    nl_st_file *f = nl_st_open(path);
    nl_module *m = f ? nl_checkpoint_module_from(f) : NULL;
    nl_st_close(f);
    return m;
}

/* ---------------------------------------------------------------- optimizer checkpoints - */

/* The state_dict name of each of o's parameters (names[i] for nl_optim_param(o, i)). */
static nl_status optim_names(nl_optim *o, ckpt_list *all, const char **names)
{
    nl_status st = collect(nl_optim_net(o), "", false, all);
    for (int i = 0; i < nl_optim_nparams(o) && st == NL_OK; i++) {
        names[i] = NULL;
        for (int j = 0; j < all->n && !names[i]; j++)
            if (all->v[j].p == nl_optim_param(o, i)) names[i] = all->v[j].name;
        if (!names[i])
            st = nl_seterr(NL_EINVAL, "checkpoint: the optimizer's parameter %d is no longer in "
                           "its network", i + 1);
    }
    return st;
}

/* "optim.<param>.<state>" into buf. */
static void state_name(char *buf, size_t n, const char *param, const nl_optim *o, int k)
{
    snprintf(buf, n, "optim.%s.%s", param, nl_optim_state_name(o, k));
}

nl_status nl_checkpoint_add_optim(nl_st_writer *w, nl_optim *o)
{
    const nl_optim_config *c = nl_optim_get_config(o);
    cJSON *j = cJSON_CreateObject();
    bool ok = j && cJSON_AddStringToObject(j, "kind", nl_optim_kind_name(nl_optim_get_kind(o))) &&
              cJSON_AddNumberToObject(j, "steps", (double)nl_optim_steps(o)) &&
              cJSON_AddBoolToObject(j, "state", nl_optim_has_state(o)) &&
              cJSON_AddNumberToObject(j, "lr", c->lr) &&
              cJSON_AddNumberToObject(j, "momentum", c->momentum) &&
              cJSON_AddNumberToObject(j, "dampening", c->dampening) &&
              cJSON_AddBoolToObject(j, "nesterov", c->nesterov) &&
              cJSON_AddNumberToObject(j, "beta1", c->beta1) &&
              cJSON_AddNumberToObject(j, "beta2", c->beta2) &&
              cJSON_AddNumberToObject(j, "eps", c->eps) &&
              cJSON_AddNumberToObject(j, "weight_decay", c->weight_decay);
    char *text = ok ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (!text) return nl_seterr(NL_ENOMEM, "checkpoint: out of memory");
    nl_status st = nl_st_writer_meta(w, NL_CKPT_OPTIM, text);
    free(text);
    if (st != NL_OK || !nl_optim_has_state(o)) return st;
    int n = nl_optim_nparams(o);
    const char **names = calloc((size_t)n + 1, sizeof *names);
    ckpt_list all = {0};
    st = names ? optim_names(o, &all, names) : nl_seterr(NL_ENOMEM, "checkpoint: out of memory");
    for (int i = 0; i < n && st == NL_OK; i++)
        for (int k = 0; k < nl_optim_state_count(o) && st == NL_OK; k++) {
            char name[CKPT_NAME_MAX + 32];
            state_name(name, sizeof name, names[i], o, k);
            st = nl_st_writer_add(w, name, nl_optim_state(o, i, k));
        }
    free(names);
    free(all.v);
    return st;
}

/* Reads the optimizer metadata: kind, config, steps, whether state tensors were saved. */
static nl_status optim_meta(const nl_st_file *f, const nl_optim *o, nl_optim_config *c,
                            int64_t *steps, bool *state)
{
    const char *text = nl_st_meta(f, NL_CKPT_OPTIM);
    if (!text) return nl_st_bad_file(nl_st_path(f), "no optimizer state ('%s' metadata)", NL_CKPT_OPTIM);
    cJSON *j = cJSON_Parse(text);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return nl_st_bad_file(nl_st_path(f), "%s: invalid JSON", NL_CKPT_OPTIM);
    }
    nl_status st = NL_OK;
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(j, "kind");
    nl_optim_kind k = cJSON_IsString(kind) ? nl_optim_kind_parse(kind->valuestring)
                                           : NL_OPTIM_KIND_COUNT;
    if (k == NL_OPTIM_KIND_COUNT)
        st = nl_st_bad_file(nl_st_path(f), "%s: no known optimizer kind", NL_CKPT_OPTIM);
    else if (k != nl_optim_get_kind(o))
        st = nl_seterr(NL_EINVAL, "%s holds %s state, the optimizer is %s", nl_st_path(f),
                       nl_optim_kind_name(k), nl_optim_kind_name(nl_optim_get_kind(o)));
    static const char *const fields[] = {"lr", "momentum", "dampening", "beta1", "beta2", "eps",
                                         "weight_decay"};
    double *dst[] = {&c->lr, &c->momentum, &c->dampening, &c->beta1, &c->beta2, &c->eps,
                     &c->weight_decay};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0] && st == NL_OK; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, fields[i]);
        if (!cJSON_IsNumber(v))
            st = nl_st_bad_file(nl_st_path(f), "%s: no number '%s'", NL_CKPT_OPTIM, fields[i]);
        else *dst[i] = v->valuedouble;
    }
    const cJSON *nest = cJSON_GetObjectItemCaseSensitive(j, "nesterov");
    const cJSON *has = cJSON_GetObjectItemCaseSensitive(j, "state");
    uint64_t n = 0;
    if (st == NL_OK && (!cJSON_IsBool(nest) || !cJSON_IsBool(has) ||
                        !nl_st_json_uint(cJSON_GetObjectItemCaseSensitive(j, "steps"), &n)))
        st = nl_st_bad_file(nl_st_path(f), "%s: 'nesterov', 'state' and 'steps' missing or invalid",
                      NL_CKPT_OPTIM);
    if (st == NL_OK) {
        c->nesterov = cJSON_IsTrue(nest);
        *state = cJSON_IsTrue(has);
        *steps = (int64_t)n;
        if (nl_optim_check_config(k, c) != NL_OK) {
            char why[256];
            snprintf(why, sizeof why, "%s", nl_errmsg());
            st = nl_st_bad_file(nl_st_path(f), "%s: %s", NL_CKPT_OPTIM, why);
        }
    }
    cJSON_Delete(j);
    return st;
}

nl_status nl_checkpoint_load_optim(nl_st_file *f, nl_optim *o)
{
    nl_optim_config c = *nl_optim_get_config(o);
    int64_t steps = 0;
    bool state = false;
    nl_status st = optim_meta(f, o, &c, &steps, &state);
    if (st != NL_OK) return st;
    int n = nl_optim_nparams(o), ns = nl_optim_state_count(o);
    const char **names = calloc((size_t)n + 1, sizeof *names);
    nl_tensor **tmp = calloc((size_t)n * ns + 1, sizeof *tmp);
    ckpt_list all = {0};
    st = names && tmp ? optim_names(o, &all, names)
                      : nl_seterr(NL_ENOMEM, "checkpoint: out of memory");
    /* Validate every state tensor, then read them all, then change o. */
    for (int pass = 0; pass < 2 && state; pass++)
        for (int i = 0; i < n && st == NL_OK; i++)
            for (int k = 0; k < ns && st == NL_OK; k++) {
                const nl_tensor *v = nl_optim_param(o, i)->value;
                char name[CKPT_NAME_MAX + 32];
                state_name(name, sizeof name, names[i], o, k);
                if (pass == 0)
                    st = nl_st_check(f, name, NL_F32, v->ndim, v->shape, "the optimizer needs");
                else if (!(tmp[i * ns + k] = nl_st_get(f, name)))
                    st = nl_errcode();
            }
    if (st == NL_OK && state) st = nl_optim_alloc_state(o);
    for (int i = 0; i < n * ns && st == NL_OK && state; i++)
        st = nl_copy(nl_optim_state(o, i / ns, i % ns), tmp[i]);
    if (st == NL_OK) {
        nl_optim_set_config(o, &c);
        nl_optim_set_progress(o, steps, state);
    }
    for (int i = 0; tmp && i < n * ns; i++) nl_tensor_release(tmp[i]);
    free(tmp);
    free(names);
    free(all.v);
    return st;
}

/* ---------------------------------------------------------------- whole checkpoints ----- */

nl_status nl_checkpoint_save(const char *path, nl_module *net, nl_optim *o, const char *const *meta)
{
    nl_st_writer *w = nl_st_writer_new();
    if (!w) return nl_errcode();
    nl_status st = nl_checkpoint_add_module(w, net);
    if (st == NL_OK && o) st = nl_checkpoint_add_optim(w, o);
    for (int i = 0; meta && meta[i] && st == NL_OK; i += 2)
        st = meta[i + 1] ? nl_st_writer_meta(w, meta[i], meta[i + 1])
                         : nl_seterr(NL_EINVAL, "checkpoint: metadata '%s' has no value", meta[i]);
    if (st == NL_OK) st = nl_st_writer_commit(w, path);
    nl_st_writer_free(w);
    return st;
}

nl_status nl_checkpoint_save_module(const char *path, nl_module *net, const char *const *meta)
{
    return nl_checkpoint_save(path, net, NULL, meta);
}
