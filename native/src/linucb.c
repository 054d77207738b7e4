/*
 * linucb.c - the router's per-decision arithmetic (edge/router/linucb.py, polar.py).
 *
 * numpy does each of these steps in one call over all arms, but between a daemon's requests
 * (caches cold after llama.cpp's evaluation) every numpy call costs 10-30 us of dispatch, so a
 * decision of about fifteen calls took ~0.25 ms for three adapters. Here it is two calls.
 */
#include "edge.h"

#include <math.h>
#include <string.h>

/* Sixteen lanes: four four-double vectors (GCC / Clang vector extensions: two SSE2 or NEON
 * registers each by default), independent chains the CPU can overlap; loads through memcpy are
 * unaligned-safe and compile to plain vector loads. On x86-64 with glibc the function is also
 * compiled for AVX2 and picked at load time (target_clones): one register per vector there,
 * which is what it takes to keep up with numpy's BLAS at N = 256 (1.1 MiB of rows a decision). */
typedef double v4d __attribute__((vector_size(32)));

#if defined(__x86_64__) && defined(__GLIBC__) && \
    ((defined(__clang__) && __clang_major__ >= 14) || (!defined(__clang__) && __GNUC__ >= 6))
#define EDGE_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define EDGE_CLONES
#endif

EDGE_CLONES
static double dot(const double *a, const double *b, uint32_t m) {
    v4d s0 = {0.0, 0.0, 0.0, 0.0}, s1 = s0, s2 = s0, s3 = s0;
    uint32_t k = 0;
    for (; k + 16 <= m; k += 16) {
        v4d a0, a1, a2, a3, b0, b1, b2, b3;
        memcpy(&a0, a + k, 32);
        memcpy(&a1, a + k + 4, 32);
        memcpy(&a2, a + k + 8, 32);
        memcpy(&a3, a + k + 12, 32);
        memcpy(&b0, b + k, 32);
        memcpy(&b1, b + k + 4, 32);
        memcpy(&b2, b + k + 8, 32);
        memcpy(&b3, b + k + 12, 32);
        s0 += a0 * b0;
        s1 += a1 * b1;
        s2 += a2 * b2;
        s3 += a3 * b3;
    }
    v4d s = (s0 + s1) + (s2 + s3);
    double total = (s[0] + s[1]) + (s[2] + s[3]);
    for (; k < m; k++)
        total += a[k] * b[k];
    return total;
}

int edge_linucb_scores(const double *rows, uint32_t n, uint32_t row_len, uint32_t d, int packed,
                       const double *x, double *weights, double prior, double alpha,
                       const double *penalty, double *mean, double *bonus, double *score,
                       double tie_tolerance, int32_t *best, int32_t *ties, uint32_t *n_ties) {
    if (!rows || !x || !weights || !mean || !bonus || !score || !best || !ties || !n_ties ||
        n == 0 || d == 0 || !(tie_tolerance >= 0.0))
        return EDGE_ERR_INVALID;
    uint64_t m = packed ? (uint64_t)d * (d + 1) / 2 : (uint64_t)d * d;
    if ((uint64_t)row_len < d + m)
        return EDGE_ERR_INVALID;
    /* Packed: x'A^-1x = sum_{i<=j} w_ij P_ij with w_ii = x_i^2, w_ij = 2 x_i x_j (A is
     * symmetric): the weights once, then one dot product per arm. Whole: x . (A^-1 x), a dot
     * product per row, so no d x d weights are written (at d = 64 that was 32 KiB a call). */
    if (packed && alpha != 0.0) {
        uint64_t k = 0;
        for (uint32_t i = 0; i < d; i++) {
            double xi = x[i], twice = 2.0 * xi; /* exact: 2 (x_i x_j) == (2 x_i) x_j */
            weights[k++] = xi * xi;
            for (uint32_t j = i + 1; j < d; j++)
                weights[k++] = twice * x[j];
        }
    }
    int32_t arg = 0;
    for (uint32_t a = 0; a < n; a++) {
        const double *row = rows + (uint64_t)a * row_len;
        mean[a] = dot(row, x, d) + prior;
        /* alpha = 0 (greedy, the tuned setting at several catalogue sizes): the bonus is 0
         * whatever x'A^-1x is, so the quadratic form, most of the work, is skipped. */
        double quad = 0.0;
        if (alpha != 0.0) {
            if (packed) {
                quad = dot(row + d, weights, (uint32_t)m);
            } else {
                for (uint32_t i = 0; i < d; i++)
                    quad += x[i] * dot(row + d + (uint64_t)i * d, x, d);
            }
        }
        /* >= 0 in exact arithmetic; fabs absorbs a rounding of order 1e-17. */
        bonus[a] = alpha * sqrt(fabs(quad));
        score[a] = mean[a] + bonus[a];
        if (penalty)
            score[a] -= penalty[a];
        if (score[a] > score[arg])
            arg = (int32_t)a; /* the first of equal maxima, as numpy's argmax */
    }
    *best = arg;
    uint32_t tied = 0;
    double floor = score[arg] - tie_tolerance;
    for (uint32_t a = 0; a < n; a++)
        if (score[a] >= floor)
            ties[tied++] = (int32_t)a;
    *n_ties = tied;
    return EDGE_OK;
}

int edge_paging_penalty(uint32_t n, const double *charge, const double *share, double left,
                        const double *extra, const uint8_t *resident, double *out) {
    if (!charge || !share || !resident || !out || !(left >= 0.0))
        return EDGE_ERR_INVALID;
    for (uint32_t a = 0; a < n; a++) {
        if (resident[a]) {
            out[a] = 0.0;
            continue;
        }
        double c = charge[a] / (1.0 + left * share[a]);
        out[a] = extra ? c + extra[a] : c;
    }
    return EDGE_OK;
}

int edge_linucb_update(double *block, uint32_t d, const double *x, double reward,
                       double *scratch, double *packed_row) {
    if (!block || !x || !scratch || d == 0)
        return EDGE_ERR_INVALID;
    double *theta = block, *a_inv = block + d;
    double *ax = scratch, *k = scratch + d;
    for (uint32_t i = 0; i < d; i++)
        ax[i] = dot(a_inv + (uint64_t)i * d, x, d);
    double denom = 1.0 + dot(x, ax, d);
    if (!(denom > 0.0))
        return EDGE_ERR_INVALID; /* A^-1 is not positive definite: a corrupt state */
    for (uint32_t i = 0; i < d; i++)
        k[i] = ax[i] / denom;
    for (uint32_t i = 0; i < d; i++) {
        double *row = a_inv + (uint64_t)i * d;
        for (uint32_t j = 0; j < d; j++)
            row[j] -= ax[i] * k[j];
    }
    double err = reward - dot(theta, x, d);
    for (uint32_t i = 0; i < d; i++)
        theta[i] += err * k[i];
    if (packed_row) {
        uint64_t p = d;
        for (uint32_t i = 0; i < d; i++)
            packed_row[i] = theta[i];
        for (uint32_t i = 0; i < d; i++)
            for (uint32_t j = i; j < d; j++)
                packed_row[p++] = a_inv[(uint64_t)i * d + j];
    }
    return EDGE_OK;
}
