/* The C kernels behind a byte protocol on stdin / stdout, with no Python: a build of them for
 * another architecture (aarch64) runs under an emulator (arm_emulator.py) and answers the same
 * requests as the host's build, byte for byte (test_kernels_aarch64.py).
 *
 * Request, repeated until end of input: u32 op, u32 nargs, then nargs arguments, each a u8 kind
 * and its payload: 0 an int64, 1 a float64 (passed on as float where the kernel takes float),
 * 2 a buffer (u64 length, then the bytes; passed as a 64-byte-aligned copy), 3 NULL.
 * Answer per request: i64 the kernel's return value (0 for void kernels), then every buffer
 * argument as it is after the call (u64 length, bytes), in argument order.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qgnn_kernels.h"

#define MAX_ARGS 32

typedef struct {
    int kind;
    int64_t i;
    double d;
    void *p;
    uint64_t n;
} arg;

static uint8_t *in_buf;
static size_t in_len, in_pos;
static uint8_t *out_buf;
static size_t out_len, out_cap;

static void fail(const char *why) {
    (void)!write(2, why, strlen(why));
    _exit(3);
}

static void read_all(void) {
    size_t cap = 1 << 16;
    in_buf = malloc(cap);
    for (;;) {
        if (in_buf == NULL) fail("driver: out of memory reading input\n");
        if (in_len == cap) in_buf = realloc(in_buf, cap *= 2);
        if (in_buf == NULL) fail("driver: out of memory reading input\n");
        const ssize_t got = read(0, in_buf + in_len, cap - in_len);
        if (got < 0) fail("driver: read failed\n");
        if (got == 0) return;
        in_len += (size_t)got;
    }
}

static void take(void *dst, size_t n) {
    if (in_len - in_pos < n) fail("driver: truncated request\n");
    memcpy(dst, in_buf + in_pos, n);
    in_pos += n;
}

static void put(const void *src, size_t n) {
    while (out_len + n > out_cap) {
        out_cap = out_cap ? 2 * out_cap : 1 << 16;
        out_buf = realloc(out_buf, out_cap);
        if (out_buf == NULL) fail("driver: out of memory writing output\n");
    }
    memcpy(out_buf + out_len, src, n);
    out_len += n;
}

static void flush_out(void) {
    size_t done = 0;
    while (done < out_len) {
        const ssize_t wrote = write(1, out_buf + done, out_len - done);
        if (wrote <= 0) fail("driver: write failed\n");
        done += (size_t)wrote;
    }
}

#define I(k) (a[k].i)
#define F(k) ((float)a[k].d)
#define P(k) (a[k].p)

static int64_t call(uint32_t op, arg *a) {
    switch (op) {
    case 1:
        return qgnn_qlinear_table(P(0), I(1), I(2), (int32_t)I(3), P(4), I(5), P(6), P(7),
                                  (int32_t)I(8), (int)I(9), P(10), (int)I(11), P(12),
                                  (int)I(13));
    case 2: {
        qgnn_qlinear_packed *pk = qgnn_qlinear_pack(P(4), I(2), I(5));
        if (pk == NULL) return -1;
        const int rc = qgnn_qlinear_prepacked(P(0), I(1), I(2), (int32_t)I(3), pk, I(5), P(6),
                                              P(7), (int32_t)I(8), (int)I(9), P(10), (int)I(11),
                                              P(12), (int)I(13));
        qgnn_qlinear_pack_free(pk);
        return rc;
    }
    case 3:
        qgnn_qaggregate(P(0), I(1), I(2), (int32_t)I(3), P(4), I(5), P(6), P(7), (int32_t)I(8),
                        F(9), (int32_t)I(10), (int)I(11), (qgnn_reduce)I(12), P(13), (int)I(14),
                        P(15));
        return 0;
    case 4:
        return qgnn_message_aggregate_q8(P(0), I(1), I(2), (int32_t)I(3), P(4), I(5), P(6), P(7),
                                         I(8), (int32_t)I(9), F(10), (int32_t)I(11), (int)I(12),
                                         F(13), (int32_t)I(14), (int)I(15), (qgnn_reduce)I(16),
                                         P(17), (int)I(18), P(19));
    case 5:
        return qgnn_gcn_aggregate_q8(P(0), I(1), I(2), (int32_t)I(3), P(4), I(5), P(6), P(7),
                                     F(8), (int32_t)I(9), (int)I(10), (int)I(11), F(12),
                                     (int32_t)I(13), (int)I(14), F(15), (int32_t)I(16),
                                     (int)I(17), P(18), (int)I(19), P(20), (int)I(21), P(22));
    case 6:
        return qgnn_aggregate_f32(P(0), I(1), I(2), P(3), I(4), P(5), P(6), (qgnn_reduce)I(7),
                                  P(8), (int)I(9));
    case 7:
        return qgnn_edge_softmax_f32(P(0), I(1), P(2), I(3), P(4), (int)I(5));
    case 8:
        return qgnn_q_edge_softmax(P(0), I(1), P(2), I(3), P(4), I(5), P(6), (int)I(7));
    case 9:
        return qgnn_q_edge_softmax_q8(P(0), I(1), P(2), I(3), P(4), I(5), F(6), (int32_t)I(7),
                                      (int)I(8), P(9), (int)I(10));
    case 10:
        return qgnn_looped_indptr(P(0), I(1), P(2), (int)I(3), P(4), (int)I(5));
    case 11:
        qgnn_looped_src(P(0), I(1), P(2), (int)I(3), P(4), P(5), (int)I(6));
        return 0;
    case 12:
        return qgnn_float_step_q8_table(P(0), P(1), I(2), I(3), F(4), (int32_t)I(5), F(6),
                                        (int32_t)I(7), P(8), (int)I(9), P(10), I(11), P(12),
                                        I(13), F(14), (int32_t)I(15), (int)I(16), P(17),
                                        (int)I(18), P(19), (int)I(20));
    case 13:
        qgnn_lut_u8(P(0), I(1), I(2), P(3), (int)I(4), P(5), (int)I(6));
        return 0;
    case 14:
        qgnn_lut2_u8(P(0), P(1), I(2), P(3), P(4), (int)I(5));
        return 0;
    case 15:
        return qgnn_gat_logits(P(0), I(1), P(2), I(3), I(4), P(5), P(6), I(7), F(8), F(9),
                               (int32_t)I(10), (int)I(11), P(12), P(13), (int)I(14));
    case 16:
        qgnn_head_scores(P(0), I(1), I(2), I(3), (int32_t)I(4), P(5), P(6), P(7), (int)I(8));
        return 0;
    case 17:
        return qgnn_topk_s8(P(0), I(1), I(2), P(3), P(4), P(5), I(6), P(7), I(8), I(9), P(10),
                            P(11), (int)I(12));
    case 18:
        return qgnn_quantize_u8(P(0), I(1), F(2), (int32_t)I(3), (int)I(4), P(5), (int)I(6));
    case 19:
        return qgnn_quantize_s8(P(0), I(1), F(2), P(3), (int)I(4));
    case 20:
        qgnn_dequantize_u8(P(0), I(1), F(2), (int32_t)I(3), P(4), (int)I(5));
        return 0;
    case 21:
        return qgnn_cpu_supports(P(0));
    default:
        fail("driver: unknown op\n");
        return 0;
    }
}

int main(void) {
    read_all();
    while (in_pos < in_len) {
        uint32_t op, nargs;
        take(&op, 4);
        take(&nargs, 4);
        if (nargs > MAX_ARGS) fail("driver: too many arguments\n");
        arg a[MAX_ARGS];
        memset(a, 0, sizeof a);
        for (uint32_t k = 0; k < nargs; k++) {
            uint8_t kind;
            take(&kind, 1);
            a[k].kind = kind;
            if (kind == 0) {
                take(&a[k].i, 8);
            } else if (kind == 1) {
                take(&a[k].d, 8);
            } else if (kind == 2) {
                take(&a[k].n, 8);
                if (posix_memalign(&a[k].p, 64, a[k].n ? a[k].n : 1) != 0)
                    fail("driver: out of memory for a buffer\n");
                take(a[k].p, a[k].n);
            } else if (kind != 3) {
                fail("driver: unknown argument kind\n");
            }
        }
        const int64_t rc = call(op, a);
        put(&rc, 8);
        for (uint32_t k = 0; k < nargs; k++) {
            if (a[k].kind != 2) continue;
            put(&a[k].n, 8);
            put(a[k].p, a[k].n);
            free(a[k].p);
        }
    }
    flush_out();
    return 0;
}
