/* sim.h: "sim", a simulated accelerator. Its memory is host memory that the host cannot read:
 * pages mapped PROT_NONE, opened only inside the backend's own exec and copy calls, where the CPU
 * kernels run on them. Any other host access faults at once (the address shows in the sanitizer's
 * or gdb's trace). It counts what a real device costs (nl_device_stats): kernel launches, bytes
 * each way, synchronisations (explicit, and one per device->host copy, which a real device waits
 * for), and device memory. backends/registry.c provides it to core. */
#ifndef NL_SIM_H
#define NL_SIM_H

#include "nl.h"

/* Device sim:<index>, made on first call (each number its own instance with its own counters),
 * never freed; NULL with NL_EDEVICE for an index out of range. */
nl_backend *nl_sim_backend(int index);

#endif
