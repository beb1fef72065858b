/* Which optional instruction paths this CPU may take.
 *
 * The AVX-512 VNNI kernels (qlinear, int8 top-k) are compiled with a target attribute and chosen
 * at run time; qgnn_allow_vnni(0) turns them off so the tests can run the portable kernels on a
 * VNNI machine too. It is a process-wide switch meant for tests, not for concurrent toggling.
 */
#include "qgnn_kernels.h"

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
int qgnn_vnni_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw");
}
#else
int qgnn_vnni_supported(void) { return 0; }
#endif

static int vnni_allowed = 1;

void qgnn_allow_vnni(int allow) { vnni_allowed = allow; }

int qgnn_have_vnni(void) { return vnni_allowed && qgnn_vnni_supported(); }
