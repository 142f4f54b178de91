/* error.c: status codes, the thread-local error message, the interrupt flag and the idle hook:
 * what long computations and the REPL loop share with whoever drives them. */
#include "nl.h"

#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>

static const char *const status_names[NL_STATUS_COUNT] = {
    [NL_OK] = "ok",
    [NL_EINVAL] = "invalid argument",
    [NL_ESHAPE] = "shape mismatch",
    [NL_ETYPE] = "unsupported dtype",
    [NL_ENOMEM] = "out of memory",
    [NL_EIO] = "i/o error",
    [NL_EFORMAT] = "bad file format",
    [NL_EINTR] = "interrupted",
    [NL_EDEVICE] = "device error",
    [NL_EUNSUPPORTED] = "unsupported operation",
};
_Static_assert(sizeof status_names / sizeof status_names[0] == NL_STATUS_COUNT,
               "one name per status");

static _Thread_local char err_buf[1024];
static _Thread_local nl_status err_code;

const char *nl_status_name(nl_status s)
{
    return (unsigned)s < NL_STATUS_COUNT ? status_names[s] : "unknown status";
}

const char *nl_errmsg(void) { return err_buf; }
nl_status nl_errcode(void) { return err_code; }

nl_status nl_seterr(nl_status code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_buf, sizeof err_buf, fmt, ap);
    va_end(ap);
    err_code = code;
    return code;
}

void nl_clearerr(void)
{
    err_buf[0] = '\0';
    err_code = NL_OK;
}

/* sig_atomic_t-compatible lock-free flag: set from a signal handler, read by any thread. */
static atomic_int interrupt_flag;

void nl_interrupt(void) { atomic_store_explicit(&interrupt_flag, 1, memory_order_relaxed); }
void nl_interrupt_clear(void) { atomic_store_explicit(&interrupt_flag, 0, memory_order_relaxed); }
bool nl_interrupted(void) { return atomic_load_explicit(&interrupt_flag, memory_order_relaxed) != 0; }

nl_status nl_check_interrupt(void)
{
    return nl_interrupted() ? nl_seterr(NL_EINTR, "interrupted") : NL_OK;
}

static atomic_int defer_depth;

void nl_interrupt_defer(bool on)
{
    if (on) atomic_fetch_add(&defer_depth, 1);
    else if (atomic_load(&defer_depth) > 0) atomic_fetch_sub(&defer_depth, 1);
}

bool nl_interrupt_deferred(void) { return atomic_load(&defer_depth) > 0; }

static void (*idle_hook)(void);

void nl_set_idle_hook(void (*fn)(void)) { idle_hook = fn; }

void nl_idle(void)
{
    if (idle_hook) idle_hook();
}
