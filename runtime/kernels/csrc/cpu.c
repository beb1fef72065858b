/* Which ISA levels this CPU can run.
 *
 * Asked through the baseline module before any other level module is imported: a module built
 * with -march=x86-64-v4 may execute AVX-512 instructions as soon as it initialises.
 */
#include <string.h>

#include "qgnn_kernels.h"

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__)
#define QGNN_CPU_BUILTIN 1
/* __builtin_cpu_supports also checks that the OS saves the wider registers (XCR0). */
static int x86_v3(void) { return __builtin_cpu_supports("x86-64-v3"); }
static int x86_v4(void) { return __builtin_cpu_supports("x86-64-v4"); }
static int x86_vnni(void) { return __builtin_cpu_supports("avx512vnni"); }
#elif (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define QGNN_CPU_BUILTIN 0
/* CPUID and XGETBV asked directly: __builtin_cpu_supports reads the runtime library's
 * __cpu_indicator_init, which some clang toolchains ship as a stub that reports no feature at
 * all (zig's compiler-rt does), and every level above baseline would then go unused. */
#include <cpuid.h>

static int x86_bits(unsigned leaf, unsigned sub, unsigned reg, unsigned mask) {
    unsigned r[4] = {0, 0, 0, 0};
    if (__get_cpuid_max(leaf & 0x80000000u, NULL) < leaf) return 0;
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
    return (r[reg] & mask) == mask;
}

enum { EAX, EBX, ECX, EDX };

/* The register state the OS saves on context switch (XCR0), when it has enabled XSAVE. */
static unsigned x86_xcr0(void) {
    if (!x86_bits(1, 0, ECX, 1u << 27)) return 0; /* OSXSAVE */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return lo;
}

/* x86-64-v3: AVX, AVX2, BMI1, BMI2, F16C, FMA, LZCNT, MOVBE, with YMM state saved. */
static int x86_v3(void) {
    const unsigned leaf1 = (1u << 12) | (1u << 22) | (1u << 28) | (1u << 29);
    const unsigned leaf7 = (1u << 3) | (1u << 5) | (1u << 8);
    return (x86_xcr0() & 0x6u) == 0x6u && x86_bits(1, 0, ECX, leaf1) &&
           x86_bits(7, 0, EBX, leaf7) && x86_bits(0x80000001u, 0, ECX, 1u << 5);
}

/* x86-64-v4: v3 and AVX512F, BW, CD, DQ, VL, with opmask and ZMM state saved. */
static int x86_v4(void) {
    const unsigned leaf7 = (1u << 16) | (1u << 17) | (1u << 28) | (1u << 30) | (1u << 31);
    return x86_v3() && (x86_xcr0() & 0xe6u) == 0xe6u && x86_bits(7, 0, EBX, leaf7);
}

static int x86_vnni(void) { return x86_bits(7, 0, ECX, 1u << 11); }
#endif

int qgnn_cpu_supports(const char *level) {
    if (strcmp(level, "baseline") == 0) return 1;
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#if QGNN_CPU_BUILTIN
    __builtin_cpu_init();
#endif
    if (strcmp(level, "avx2") == 0) return x86_v3();
    if (strcmp(level, "avx512") == 0) return x86_v4();
    if (strcmp(level, "avx512_vnni") == 0) return x86_v4() && x86_vnni();
#elif defined(__aarch64__) && defined(__linux__)
    if (strcmp(level, "dotprod") == 0) return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#endif
    return 0;
}
