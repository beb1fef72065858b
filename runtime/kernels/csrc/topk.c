/* INT8 top-k retrieval: score[i] = sum_d table[i, d] * q[d] (exact int32), best k by score, ties
 * to the smaller id, excluded ids never returned, optionally only over a candidate subset.
 *
 * Each part scores its rows block by block into a small buffer (a tight, vectorisable loop), then
 * offers the block to its own size-k min-heap: almost every score loses to the heap's worst kept
 * hit at one compare, so selection costs next to nothing beside the dot products. The per-part
 * heaps are merged and sorted at the end. At the avx512_vnni level an int8 query is scored with
 * vpdpbusd: the table byte t is fed as the unsigned t ^ 0x80 = t + 128 and the
 * constant 128 * sum(q) is subtracted afterwards.
 */
#include <stdlib.h>
#include <string.h>

#include "qgnn_kernels.h"

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
#define QGNN_HAVE_VNNI_PATH 1
#include <immintrin.h>
#endif

#define TOPK_BLOCK 256

typedef struct {
    int32_t score;
    int64_t id;
} hit;

typedef struct {
    const int8_t *table;
    int64_t D;
    const int8_t *q8;
    const int32_t *q32;
    int32_t q8_sum; /* sum(q8), for the VNNI offset */
    int use_vnni;
    const int64_t *rows; /* candidate ids, or NULL: row position == id */
    const int64_t *exclude;
    int64_t n_exclude;
    int64_t k;
    hit *heaps;          /* part t owns heaps[t * k .. t * k + k) */
    int64_t sizes[QGNN_MAX_PARTS];
} topk_ctx;

QGNN_INLINE int worse(hit a, hit b) {
    return a.score < b.score || (a.score == b.score && a.id > b.id);
}

static int better_first(const void *pa, const void *pb) {
    const hit *a = pa, *b = pb;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    return (a->id > b->id) - (a->id < b->id);
}

static int is_excluded(const topk_ctx *c, int64_t id) {
    int64_t lo = 0, hi = c->n_exclude;
    while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (c->exclude[mid] < id) lo = mid + 1;
        else hi = mid;
    }
    return lo < c->n_exclude && c->exclude[lo] == id;
}

/* Offers one hit to a heap whose root h[0] is the worst hit kept. */
static void heap_offer(hit *h, int64_t *size, int64_t k, hit cand) {
    int64_t i;
    if (*size < k) {
        i = (*size)++;
        while (i > 0 && worse(cand, h[(i - 1) / 2])) {
            h[i] = h[(i - 1) / 2];
            i = (i - 1) / 2;
        }
        h[i] = cand;
        return;
    }
    if (!worse(h[0], cand)) return;
    i = 0;
    for (;;) {
        int64_t child = 2 * i + 1;
        if (child >= k) break;
        if (child + 1 < k && worse(h[child + 1], h[child])) child++;
        if (!worse(h[child], cand)) break;
        h[i] = h[child];
        i = child;
    }
    h[i] = cand;
}

/* Portable scoring of rows [p0, p0 + n) (positions; ids via c->rows). Constant D unrolls. */
QGNN_INLINE void score_block_c(const topk_ctx *c, int64_t p0, int n, int64_t D, int32_t *out) {
    for (int i = 0; i < n; i++) {
        const int64_t id = c->rows ? c->rows[p0 + i] : p0 + i;
        const int8_t *t = c->table + id * D;
        int32_t s = 0;
        if (c->q8)
            for (int64_t d = 0; d < D; d++) s += (int32_t)t[d] * (int32_t)c->q8[d];
        else
            for (int64_t d = 0; d < D; d++) s += (int32_t)t[d] * c->q32[d];
        out[i] = s;
    }
}

static void score_c(const topk_ctx *c, int64_t p0, int n, int32_t *out) {
    switch (c->D) {
        case 32: score_block_c(c, p0, n, 32, out); break;
        case 64: score_block_c(c, p0, n, 64, out); break;
        case 128: score_block_c(c, p0, n, 128, out); break;
        default: score_block_c(c, p0, n, c->D, out); break;
    }
}

#ifdef QGNN_HAVE_VNNI_PATH
/* VNNI scoring for an int8 query: 64 table bytes per vpdpbusd, a masked load for the tail. */
static void score_vnni(const topk_ctx *c, int64_t p0, int n, int32_t *out) {
    const int64_t D = c->D, full = D / 64;
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    const __mmask64 tail = D % 64 ? (__mmask64)(~0ULL >> (64 - D % 64)) : 0;
    __m512i qv[8];
    const int cached = full < 8 ? (int)full : 8;
    for (int j = 0; j < cached; j++) qv[j] = _mm512_loadu_si512(c->q8 + 64 * j);
    const __m512i qt = tail ? _mm512_maskz_loadu_epi8(tail, c->q8 + 64 * full) : _mm512_setzero_si512();
    int i = 0;
    /* Four rows at a time: their partial sums are folded together before the horizontal add. */
    for (; i + 4 <= n; i += 4) {
        __m512i acc[4];
        for (int r = 0; r < 4; r++) {
            const int64_t id = c->rows ? c->rows[p0 + i + r] : p0 + i + r;
            const int8_t *t = c->table + id * D;
            __m512i a = _mm512_setzero_si512();
            for (int64_t j = 0; j < full; j++) {
                const __m512i tv = _mm512_xor_si512(_mm512_loadu_si512(t + 64 * j), flip);
                const __m512i q = j < 8 ? qv[j] : _mm512_loadu_si512(c->q8 + 64 * j);
                a = _mm512_dpbusd_epi32(a, tv, q);
            }
            if (tail) {
                /* Masked-off bytes load as 0 and become 0x80 after the flip; q is 0 there. */
                const __m512i tv = _mm512_xor_si512(_mm512_maskz_loadu_epi8(tail, t + 64 * full), flip);
                a = _mm512_dpbusd_epi32(a, tv, qt);
            }
            acc[r] = a;
        }
        /* Pairwise 512 -> 256 -> 128 folds keep the four rows apart, then one 4-lane transpose. */
        __m256i h[4];
        for (int r = 0; r < 4; r++)
            h[r] = _mm256_add_epi32(_mm512_castsi512_si256(acc[r]), _mm512_extracti64x4_epi64(acc[r], 1));
        __m128i g[4];
        for (int r = 0; r < 4; r++)
            g[r] = _mm_add_epi32(_mm256_castsi256_si128(h[r]), _mm256_extracti128_si256(h[r], 1));
        const __m128i s01 = _mm_hadd_epi32(g[0], g[1]);
        const __m128i s23 = _mm_hadd_epi32(g[2], g[3]);
        __m128i s = _mm_hadd_epi32(s01, s23);
        s = _mm_sub_epi32(s, _mm_set1_epi32(128 * c->q8_sum));
        _mm_storeu_si128((__m128i *)(out + i), s);
    }
    for (; i < n; i++) {
        const int64_t id = c->rows ? c->rows[p0 + i] : p0 + i;
        const int8_t *t = c->table + id * D;
        __m512i a = _mm512_setzero_si512();
        for (int64_t j = 0; j < full; j++) {
            const __m512i tv = _mm512_xor_si512(_mm512_loadu_si512(t + 64 * j), flip);
            a = _mm512_dpbusd_epi32(a, tv, _mm512_loadu_si512(c->q8 + 64 * j));
        }
        if (tail) {
            const __m512i tv = _mm512_xor_si512(_mm512_maskz_loadu_epi8(tail, t + 64 * full), flip);
            a = _mm512_dpbusd_epi32(a, tv, qt);
        }
        out[i] = _mm512_reduce_add_epi32(a) - 128 * c->q8_sum;
    }
}
#endif

static void topk_part(void *vctx, int64_t p0, int64_t p1, int part) {
    topk_ctx *c = vctx;
    hit *h = c->heaps + (int64_t)part * c->k;
    int64_t size = 0;
    int32_t scores[TOPK_BLOCK];
    for (int64_t p = p0; p < p1; p += TOPK_BLOCK) {
        const int n = p1 - p < TOPK_BLOCK ? (int)(p1 - p) : TOPK_BLOCK;
#ifdef QGNN_HAVE_VNNI_PATH
        if (c->use_vnni) score_vnni(c, p, n, scores);
        else score_c(c, p, n, scores);
#else
        score_c(c, p, n, scores);
#endif
        for (int i = 0; i < n; i++) {
            if (size == c->k && scores[i] < h[0].score) continue;
            const hit cand = {scores[i], c->rows ? c->rows[p + i] : p + i};
            if (size == c->k && !worse(h[0], cand)) continue;
            if (c->n_exclude && is_excluded(c, cand.id)) continue;
            heap_offer(h, &size, c->k, cand);
        }
    }
    c->sizes[part] = size;
}

int64_t qgnn_topk_s8(const int8_t *table, int64_t N, int64_t D, const int8_t *q8,
                     const int32_t *q32, const int64_t *rows, int64_t n_rows,
                     const int64_t *exclude, int64_t n_exclude, int64_t k, int64_t *out_ids,
                     int32_t *out_scores, int num_threads) {
    const int64_t n = rows ? n_rows : N;
    if (n == 0 || k == 0) return 0;
    if (k > n) k = n;
    const int nparts = qgnn_parts_for(n * D / 4, num_threads);
    hit *heaps = malloc((size_t)(nparts * k) * sizeof(hit));
    if (heaps == NULL) return -1;
    topk_ctx c = {.table = table, .D = D, .q8 = q8, .q32 = q32, .rows = rows,
                  .exclude = exclude, .n_exclude = n_exclude, .k = k, .heaps = heaps};
#ifdef QGNN_HAVE_VNNI_PATH
    c.use_vnni = q8 != NULL && D > 0;
#endif
    if (q8)
        for (int64_t d = 0; d < D; d++) c.q8_sum += q8[d];
    int64_t bounds[QGNN_MAX_PARTS + 1];
    qgnn_split_even(n, nparts, bounds);
    qgnn_run_parts(topk_part, &c, bounds, nparts);
    /* Gather the parts' heaps to the front, then sort once. */
    int64_t total = 0;
    for (int t = 0; t < nparts; t++) {
        memmove(heaps + total, heaps + (int64_t)t * k, (size_t)c.sizes[t] * sizeof(hit));
        total += c.sizes[t];
    }
    qsort(heaps, (size_t)total, sizeof(hit), better_first);
    const int64_t kept = total < k ? total : k;
    for (int64_t i = 0; i < kept; i++) {
        out_ids[i] = heaps[i].id;
        out_scores[i] = heaps[i].score;
    }
    free(heaps);
    return kept;
}
