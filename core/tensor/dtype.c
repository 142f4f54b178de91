/* dtype.c: the dtype and device tables (one row per enum value) and their name parsers. */
#include "nl.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const nl_dtype_traits nl_dtype_table[NL_DTYPE_COUNT] = {
    [NL_F32] = {.name = "f32", .size = 4, .is_float = true, .min = -3.4028234663852886e38, .max = 3.4028234663852886e38},
    [NL_I8] = {.name = "i8", .size = 1, .is_float = false, .min = INT8_MIN, .max = INT8_MAX},
    [NL_I32] = {.name = "i32", .size = 4, .is_float = false, .min = INT32_MIN, .max = INT32_MAX},
    [NL_U8] = {.name = "u8", .size = 1, .is_float = false, .min = 0, .max = UINT8_MAX},
};
_Static_assert(sizeof nl_dtype_table / sizeof nl_dtype_table[0] == NL_DTYPE_COUNT,
               "one row per dtype");

static const struct { const char *alias; nl_dtype dtype; } dtype_aliases[] = {
    {"float32", NL_F32}, {"float", NL_F32}, {"int8", NL_I8}, {"int32", NL_I32},
    {"int", NL_I32},     {"uint8", NL_U8},  {"byte", NL_U8},
};

nl_dtype nl_dtype_parse(const char *name)
{
    for (int t = 0; t < NL_DTYPE_COUNT; t++)
        if (strcmp(name, nl_dtype_table[t].name) == 0) return (nl_dtype)t;
    for (size_t i = 0; i < sizeof dtype_aliases / sizeof dtype_aliases[0]; i++)
        if (strcmp(name, dtype_aliases[i].alias) == 0) return dtype_aliases[i].dtype;
    return NL_DTYPE_COUNT;
}

static const char *const device_names[NL_DEVICE_COUNT] = {
    [NL_CPU] = "cpu", [NL_CUDA] = "cuda", [NL_SIM] = "sim"};
_Static_assert(sizeof device_names / sizeof device_names[0] == NL_DEVICE_COUNT, "one name per device");

const char *nl_device_name(nl_device d)
{
    static char numbered[NL_DEVICE_COUNT][NL_DEVICE_MAX_INDEX][16]; /* "cuda:15" */
    nl_device k = nl_device_kind(d);
    int i = nl_device_index(d);
    if ((unsigned)k >= NL_DEVICE_COUNT || i >= NL_DEVICE_MAX_INDEX) return "?";
    if (i == 0) return device_names[k];
    if (!numbered[k][i][0]) snprintf(numbered[k][i], sizeof numbered[k][i], "%s:%d", device_names[k], i);
    return numbered[k][i];
}

nl_device nl_device_parse(const char *name)
{
    if (strcmp(name, "gpu") == 0) return NL_CUDA;
    for (int k = 0; k < NL_DEVICE_COUNT; k++) {
        size_t n = strlen(device_names[k]);
        if (strncmp(name, device_names[k], n) != 0) continue;
        if (name[n] == 0) return (nl_device)k;
        if (name[n] != ':' || name[n + 1] < '0' || name[n + 1] > '9') return NL_DEVICE_COUNT;
        char *end;
        long i = strtol(name + n + 1, &end, 10);
        if (*end || i < 0 || i >= NL_DEVICE_MAX_INDEX) return NL_DEVICE_COUNT;
        return nl_device_make((nl_device)k, (int)i);
    }
    return NL_DEVICE_COUNT;
}
