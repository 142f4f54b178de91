/* nl_hd.h: the NL_HD marker for per-element math shared by the CPU and CUDA backends. The same
 * header compiles as plain C (static inline) for the CPU and as __host__ __device__ for CUDA, so
 * the CPU tests test the very arithmetic the GPU kernels run. */
#ifndef NL_HD_H
#define NL_HD_H

#ifdef __CUDACC__
#define NL_HD static inline __host__ __device__
#else
#define NL_HD static inline
#endif

#endif
