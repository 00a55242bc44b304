/* Run-time CPU feature checks shared by the AVX2 kernels (lib/quant, lib/eval).  x86 only. */
#ifndef DSQ_CPU_H
#define DSQ_CPU_H

#include <stdbool.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

/* AVX2 + FMA + F16C, the set every AVX2 kernel here assumes.  F16C is read from CPUID leaf 1
 * (ECX bit 29) because clang ≤ 14 rejects __builtin_cpu_supports("f16c"); gcc's builtin
 * answers the same bit.  The answer is cached (per translation unit): CPUID traps to the
 * hypervisor in a VM (microseconds), and the codecs ask per call. */
static inline bool dsq__cpu_avx2_fma_f16c(void) {
    static int known; /* 0 unknown, 1 no, 2 yes; relaxed atomics: every thread stores the same value */
    int k = __atomic_load_n(&known, __ATOMIC_RELAXED);
    if (k) return k == 2;
    unsigned a, b, c, d;
    __builtin_cpu_init();
    bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __get_cpuid(1, &a, &b, &c, &d) &&
               (c & bit_F16C) != 0;
    __atomic_store_n(&known, yes ? 2 : 1, __ATOMIC_RELAXED);
    return yes;
}
#else
static inline bool dsq__cpu_avx2_fma_f16c(void) { return false; }
#endif

#endif
