/* Preloaded into a process (bench_engine's FP32 child, ./run test's lower-level passes, or any
 * command through `python -m qgnn.bench.cpuid_mask`), makes every library in it see a CPU
 * without the instruction sets above one level.
 *
 * onnxruntime's MLAS picks its kernels from CPUID when it loads and has no switch to hold it
 * back: at QGNN_ISA=baseline the FP32 comparators kept AVX-512 while qgnn's INT8 kernels ran
 * SSE2, and on a VNNI machine the suite never met MLAS's saturating AVX2 u8 x s8 kernel. Linux's CPUID faulting (arch_prctl ARCH_SET_CPUID, the `cpuid_fault` flag in
 * /proc/cpuinfo) turns every CPUID instruction of this process into SIGSEGV; the handler below
 * executes the real CPUID with faulting briefly off, clears the feature bits of the level named
 * by QGNN_CPUID_MASK and steps over the instruction. The setting is per thread and inherited by
 * threads created later, so it is made in a constructor, before any library starts a thread.
 *
 * Levels (what is cleared):
 *   baseline  everything that needs the AVX register state (AVX, AVX2, FMA, F16C, AVX-512, AMX,
 *             XSAVE/OSXSAVE) and BMI1/2, FMA4, XOP: 128-bit SSE up to SSE4.2 stays, the
 *             x86-64-v2 level numpy itself requires; still more than qgnn's SSE2 baseline.
 *   avx2      AVX-512 (all subsets), AVX-VNNI, AMX.
 *   avx512    the VNNI dot-product bits (AVX512_VNNI, AVX-VNNI).
 * Other SIGSEGV handlers: a library that installs one later (Python's faulthandler, which
 * pytest and torch's process spawner enable) would take the CPUID traps and report each as a
 * crash. So sigaction() and signal() for SIGSEGV are wrapped: the caller's handler is recorded,
 * the mask's stays installed, and every fault that is not a CPUID goes to the recorded handler
 * (or the default action), as it would have without the mask.
 * QGNN_CPUID_MASK_REPORT=1 prints one line to stderr once the handler is installed.
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#ifndef ARCH_SET_CPUID
#define ARCH_SET_CPUID 0x1012
#endif

#define BIT(n) (1u << (n))

typedef int (*sigaction_fn)(int, const struct sigaction *, struct sigaction *);

static sigaction_fn real_sigaction;
static struct sigaction chained; /* the SIGSEGV handler the program believes is installed */
static int active;               /* the mask's handler is installed */
static int level = -1;           /* 0 baseline, 1 avx2, 2 avx512 */

static sigaction_fn next_sigaction(void) {
    if (real_sigaction == NULL) real_sigaction = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
    return real_sigaction;
}

static void raw_cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3])
                     : "a"(leaf), "c"(sub));
}

static void mask(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
    /* r = eax, ebx, ecx, edx */
    const uint32_t avx512_ebx = BIT(16) | BIT(17) | BIT(21) | BIT(26) | BIT(27) | BIT(28) |
                                BIT(30) | BIT(31);
    const uint32_t avx512_ecx = BIT(1) | BIT(6) | BIT(11) | BIT(12) | BIT(14);
    const uint32_t avx512_edx = BIT(2) | BIT(3) | BIT(8) | BIT(22) | BIT(23) | BIT(24) | BIT(25);
    if (leaf == 1 && level == 0) {
        /* FMA, XSAVE, OSXSAVE, AVX, F16C */
        r[2] &= ~(BIT(12) | BIT(26) | BIT(27) | BIT(28) | BIT(29));
    } else if (leaf == 7 && sub == 0) {
        if (level == 0) {
            r[1] &= ~(BIT(3) | BIT(5) | BIT(8) | avx512_ebx);  /* BMI1, AVX2, BMI2, AVX-512 */
            r[2] &= ~(avx512_ecx | BIT(9) | BIT(10));          /* + VAES, VPCLMULQDQ */
            r[3] &= ~avx512_edx;
        } else if (level == 1) {
            r[1] &= ~avx512_ebx;
            r[2] &= ~avx512_ecx;
            r[3] &= ~avx512_edx;
        } else {
            r[2] &= ~BIT(11); /* AVX512_VNNI */
        }
    } else if (leaf == 7 && sub == 1) {
        /* AVX-VNNI (4), AVX512_BF16 (5), AVX-IFMA (23), AVX-VNNI-INT8 in edx (4) */
        r[0] &= level == 2 ? ~BIT(4) : ~(BIT(4) | BIT(5) | BIT(23));
        if (level < 2) r[3] &= ~BIT(4);
    } else if (leaf == 0xd && level == 0) {
        r[0] = r[1] = r[2] = r[3] = 0; /* no XSAVE state components */
    } else if (leaf == 0x80000001u && level == 0) {
        r[2] &= ~(BIT(11) | BIT(16) | BIT(21)); /* XOP, FMA4, TBM */
    }
}

static void on_segv(int sig, siginfo_t *info, void *context) {
    ucontext_t *uc = (ucontext_t *)context;
    greg_t *g = uc->uc_mcontext.gregs;
    const uint8_t *ip = (const uint8_t *)g[REG_RIP];
    if (info->si_code == SI_KERNEL && ip[0] == 0x0f && ip[1] == 0xa2) {
        uint32_t r[4];
        uint32_t leaf = (uint32_t)g[REG_RAX], sub = (uint32_t)g[REG_RCX];
        syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);
        raw_cpuid(leaf, sub, r);
        syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
        mask(leaf, sub, r);
        g[REG_RAX] = r[0];
        g[REG_RBX] = r[1];
        g[REG_RCX] = r[2];
        g[REG_RDX] = r[3];
        g[REG_RIP] += 2;
        return;
    }
    /* Not a CPUID: what the program's own handler would have done. */
    if (chained.sa_flags & SA_SIGINFO) {
        chained.sa_sigaction(sig, info, context);
    } else if (chained.sa_handler != SIG_DFL && chained.sa_handler != SIG_IGN) {
        chained.sa_handler(sig);
    } else {
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        next_sigaction()(SIGSEGV, &dfl, NULL);
        active = 0;
        /* A fault re-executes its instruction and meets the default action; a signal sent by
           raise() or kill() would not come again, so send it once more. */
        if (info->si_code <= 0) raise(sig);
    }
}

int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    if (sig == SIGSEGV && active) {
        struct sigaction before = chained;
        if (act != NULL) chained = *act;
        if (old != NULL) *old = before;
        return 0;
    }
    return next_sigaction()(sig, act, old);
}

sighandler_t signal(int sig, sighandler_t handler) {
    struct sigaction act, old;
    memset(&act, 0, sizeof act);
    act.sa_handler = handler;
    act.sa_flags = SA_RESTART;
    sigemptyset(&act.sa_mask);
    if (sigaction(sig, &act, &old) != 0) return SIG_ERR;
    return old.sa_handler; /* a union with sa_sigaction: the same pointer either way */
}

__attribute__((constructor)) static void install(void) {
    const char *name = getenv("QGNN_CPUID_MASK");
    if (name == NULL || *name == '\0') return;
    if (strcmp(name, "baseline") == 0) level = 0;
    else if (strcmp(name, "avx2") == 0) level = 1;
    else if (strcmp(name, "avx512") == 0) level = 2;
    else {
        fprintf(stderr, "qgnn cpuid_mask: unknown level %s (baseline, avx2, avx512)\n", name);
        _exit(2);
    }
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_segv;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    if (next_sigaction() == NULL || next_sigaction()(SIGSEGV, &action, &chained) != 0 ||
        syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) {
        /* No CPUID faulting here: refuse rather than run unconstrained under a masked name. */
        fprintf(stderr, "qgnn cpuid_mask: CPUID faulting is not available on this machine\n");
        _exit(3);
    }
    active = 1;
    if (getenv("QGNN_CPUID_MASK_REPORT") != NULL)
        fprintf(stderr, "qgnn cpuid_mask: CPUID masked to %s\n", name);
}
