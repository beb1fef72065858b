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

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
/* __builtin_cpu_supports also checks that the OS saves the wider registers (XCR0). */
static int x86_v3(void) {
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
    return __builtin_cpu_supports("x86-64-v3");
#else
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
#endif
}

static int x86_v4(void) {
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
    return __builtin_cpu_supports("x86-64-v4");
#else
    return x86_v3() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512cd");
#endif
}
#endif

int qgnn_cpu_supports(const char *level) {
    if (strcmp(level, "baseline") == 0) return 1;
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
    __builtin_cpu_init();
    if (strcmp(level, "avx2") == 0) return x86_v3();
    if (strcmp(level, "avx512") == 0) return x86_v4();
    if (strcmp(level, "avx512_vnni") == 0)
        return x86_v4() && __builtin_cpu_supports("avx512vnni");
#elif defined(__aarch64__) && defined(__linux__)
    if (strcmp(level, "dotprod") == 0) return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#endif
    return 0;
}
