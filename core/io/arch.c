/* arch.c: a network's architecture as JSON text ({"type": ..., "args": ..., "children": ...}),
 * written into checkpoints and built back into an untrained module when they are loaded. */
#include "checkpoint.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>

static cJSON *arch_node(const nl_module *m)
{
    cJSON *node = cJSON_CreateObject(), *args = NULL;
    bool ok = node && cJSON_AddStringToObject(node, "type", m->type->name) &&
              (args = cJSON_AddObjectToObject(node, "args")) != NULL;
    for (int a = 0; ok && a < NL_MAX_ARGS && m->type->args[a].name; a++) {
        const nl_argspec *spec = &m->type->args[a];
        if (isnan(m->args[a])) continue; /* derived by init: derived again when loaded */
        ok = (spec->boolean ? cJSON_AddBoolToObject(args, spec->name, m->args[a] != 0)
                            : cJSON_AddNumberToObject(args, spec->name, m->args[a])) != NULL;
    }
    if (ok && m->type->container) {
        cJSON *kids = cJSON_AddArrayToObject(node, "children");
        ok = kids != NULL;
        for (int c = 0; ok && c < m->nchildren; c++) {
            cJSON *k = arch_node(m->children[c]);
            ok = k && cJSON_AddItemToArray(kids, k);
            if (!ok) cJSON_Delete(k);
        }
    }
    if (!ok) {
        cJSON_Delete(node);
        return NULL;
    }
    return node;
}

char *nl_checkpoint_arch_json(const nl_module *m)
{
    cJSON *root = arch_node(m);
    char *s = root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!s) nl_seterr(NL_ENOMEM, "checkpoint: out of memory describing the architecture");
    return s;
}

/* The module described by node, depth levels down (the outermost: 1). */
static nl_module *arch_build(const cJSON *node, const char *ctx, int depth)
{
    if (depth > NL_MAX_DEPTH) {
        nl_st_bad_file(ctx, "architecture: the network is nested more than %d levels deep", NL_MAX_DEPTH);
        return NULL;
    }
    if (!cJSON_IsObject(node)) {
        nl_st_bad_file(ctx, "architecture: a module is not a JSON object");
        return NULL;
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(node, "type");
    const cJSON *jargs = cJSON_GetObjectItemCaseSensitive(node, "args");
    const cJSON *kids = cJSON_GetObjectItemCaseSensitive(node, "children"), *j;
    if (!cJSON_IsString(type)) {
        nl_st_bad_file(ctx, "architecture: a module has no type");
        return NULL;
    }
    const nl_module_type *t = nl_module_type_find(type->valuestring);
    if (!t) {
        nl_st_bad_file(ctx, "architecture: unknown module type '%.64s' (a layer written in Lua is "
                 "defined with nn.define before loading)", type->valuestring);
        return NULL;
    }
    if ((jargs && !cJSON_IsObject(jargs)) || (kids && !cJSON_IsArray(kids))) {
        nl_st_bad_file(ctx, "architecture: %s: args must be an object and children an array", t->name);
        return NULL;
    }
    if (kids && !t->container) {
        nl_st_bad_file(ctx, "architecture: %s is not a container but has children", t->name);
        return NULL;
    }
    double args[NL_MAX_ARGS];
    nl_module_default_args(t, args);
    cJSON_ArrayForEach(j, jargs) {
        int a = nl_module_arg_index(t, j->string);
        if (a < 0 || !(cJSON_IsNumber(j) || cJSON_IsBool(j))) {
            nl_st_bad_file(ctx, "architecture: %s has no argument '%.64s' of that type", t->name,
                     j->string);
            return NULL;
        }
        args[a] = cJSON_IsBool(j) ? cJSON_IsTrue(j) : j->valuedouble;
    }
    nl_module *m = nl_module_new(t, args);
    if (!m) {
        char why[256];
        snprintf(why, sizeof why, "%s", nl_errmsg());
        nl_st_bad_file(ctx, "architecture: %s", why);
        return NULL;
    }
    cJSON_ArrayForEach(j, kids) {
        nl_module *c = arch_build(j, ctx, depth + 1);
        nl_status st = c ? nl_module_add(m, c) : nl_errcode();
        nl_module_release(c);
        if (c && st != NL_OK) {
            char why[256];
            snprintf(why, sizeof why, "%s", nl_errmsg());
            nl_st_bad_file(ctx, "architecture: %s", why);
        }
        if (st != NL_OK) {
            nl_module_release(m);
            return NULL;
        }
    }
    return m;
}

nl_module *nl_checkpoint_arch_build(const char *json, const char *ctx, int64_t max_bytes)
{
    cJSON *root = json ? cJSON_Parse(json) : NULL;
    if (!root) {
        nl_st_bad_file(ctx, "architecture: invalid JSON");
        return NULL;
    }
    /* Building initialises parameters from the global RNG: keep the caller's stream as it was. */
    nl_rng_state rng = nl_rng_get_state();
    int64_t budget = nl_alloc_budget(max_bytes);
    nl_module *m = arch_build(root, ctx, 1);
    nl_alloc_budget(budget);
    nl_rng_set_state(rng);
    cJSON_Delete(root);
    return m;
}
