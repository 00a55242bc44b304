/* Run-time CPU feature checks shared by the AVX2 kernels (lib/quant, lib/eval).  x86 only. */
#ifndef DSQ_CPU_H
#define DSQ_CPU_H

#include <stdbool.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

/* AVX2 + FMA + F16C, the set every AVX2 kernel here assumes.  F16C is read from CPUID leaf 1
 * (ECX bit 29) because clang ≤ 14 rejects __builtin_cpu_supports("f16c"); gcc's builtin
 * answers the same bit. */
static inline bool dsq__cpu_avx2_fma_f16c(void) {
    unsigned a, b, c, d;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return false;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
    return (c & bit_F16C) != 0;
}
#else
static inline bool dsq__cpu_avx2_fma_f16c(void) { return false; }
#endif

#endif
