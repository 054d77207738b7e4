/*
 * learned.c - the learned eviction policy's candidates and network inputs (edge/learned/
 * network.py's model_inputs, feature schema 2), for the serving path and the trainer: one call
 * per decision instead of a numpy or Python call per step.
 */
#include "edge.h"

#include <math.h>
#include <stdlib.h>

int edge_learned_inputs(const float *features, uint32_t n, float demand, float free_fraction,
                        float need_fraction, float *out) {
    if (n && (!features || !out))
        return EDGE_ERR_INVALID;
    for (uint32_t i = 0; i < n; i++) {
        const float *row = features + (size_t)i * EDGE_N_FEATURES;
        float *x = out + (size_t)i * EDGE_N_LEARNED_INPUTS;
        for (int k = 0; k < EDGE_N_FEATURES; k++) {
            float v = row[k];
            v = (v != v || v > 0.0f) ? v : 0.0f; /* numpy's maximum(v, 0): NaN stays NaN */
            if (k == EDGE_FEAT_LOAD_COST)
                v *= 1e3f; /* seconds -> milliseconds */
            x[k] = log1pf(v);
        }
        x[EDGE_N_FEATURES] = demand;
        x[EDGE_N_FEATURES + 1] = free_fraction;
        x[EDGE_N_FEATURES + 2] = need_fraction;
    }
    return EDGE_OK;
}

/* Appends to out[*n] the slots of src[0..m) not yet in out[0..*n), in src order. */
static void append_new(int32_t *out, uint32_t *n, const int32_t *src, uint32_t m) {
    for (uint32_t r = 0; r < m; r++) {
        int listed = 0;
        for (uint32_t t = 0; t < *n && !listed; t++)
            listed = out[t] == src[r];
        if (!listed)
            out[(*n)++] = src[r];
    }
}

int edge_index_candidates(const edge_index *idx, uint32_t k_tail, uint32_t k_head,
                          uint32_t k_rand, uint64_t seed, int32_t *out, uint32_t *n_out) {
    if (!idx || !n_out || (k_tail + k_head + k_rand && !out))
        return EDGE_ERR_INVALID;
    *n_out = 0;
    uint32_t n = 0;
    if (k_tail) {
        int rc = edge_index_walk_lru(idx, k_tail, 1, out, &n);
        if (rc != EDGE_OK)
            return rc;
    }
    /* The head walk and the draw are read into the space after the slots listed so far, then
     * compacted in place (append_new): a kept slot moves down, never past one not yet read. */
    if (k_head) {
        uint32_t m = 0;
        int rc = edge_index_walk_mru(idx, k_head, 1, out + n, &m);
        if (rc != EDGE_OK)
            return rc;
        append_new(out, &n, out + n, m);
    }
    if (k_rand) {
        uint32_t m = 0;
        int rc = edge_index_sample_unpinned_seeded(idx, seed, k_rand, out + n, &m);
        if (rc != EDGE_OK)
            return rc;
        append_new(out, &n, out + n, m);
    }
    *n_out = n;
    return EDGE_OK;
}

int edge_learned_decision_inputs(const edge_index *idx, uint32_t k_tail, uint32_t k_head,
                                 uint32_t k_rand, uint64_t seed, double now,
                                 float free_fraction, float need_fraction, int32_t *slots,
                                 float *inputs, uint32_t *n_out) {
    if (!inputs && k_tail + k_head + k_rand)
        return EDGE_ERR_INVALID;
    int rc = edge_index_candidates(idx, k_tail, k_head, k_rand, seed, slots, n_out);
    if (rc != EDGE_OK)
        return rc;
    for (uint32_t i = 0; i < *n_out; i++) {
        float row[EDGE_N_FEATURES];
        edge_slot_info info;
        rc = edge_index_features(idx, slots + i, 1, now, row);
        if (rc == EDGE_OK)
            rc = edge_index_slot_info(idx, slots[i], &info);
        if (rc != EDGE_OK)
            return rc;
        edge_learned_inputs(row, 1, info.demand, free_fraction, need_fraction,
                            inputs + (size_t)i * EDGE_N_LEARNED_INPUTS);
    }
    return EDGE_OK;
}

typedef struct {
    float preference;
    uint32_t row;
} ranked_row;

/* Higher preference first, then lower row: a total order, so qsort's instability cannot show. */
static int by_preference(const void *a, const void *b) {
    const ranked_row *x = a, *y = b;
    if (x->preference != y->preference)
        return x->preference > y->preference ? -1 : 1;
    return x->row < y->row ? -1 : (x->row > y->row);
}

/* Up to this many rows are sorted on the stack by insertion (a decision ranks tens of
 * candidates: no allocation, fewer comparisons than qsort's calls); more go through qsort. */
#define RANK_ON_STACK 128

int edge_learned_rank(const float *q, uint32_t n, const int32_t *labels, int32_t *out) {
    if (n && (!q || !labels || !out))
        return EDGE_ERR_INVALID;
    ranked_row stack[RANK_ON_STACK];
    ranked_row *rows = n <= RANK_ON_STACK ? stack : malloc((size_t)n * sizeof *rows);
    if (!rows)
        return EDGE_ERR_NOMEM;
    for (uint32_t i = 0; i < n; i++) {
        float p = q[2 * (size_t)i + EDGE_Q_EVICT] - q[2 * (size_t)i + EDGE_Q_KEEP];
        if (!isfinite(p)) {
            if (rows != stack)
                free(rows);
            return EDGE_ERR_INVALID;
        }
        rows[i].preference = p;
        rows[i].row = i;
    }
    if (rows == stack) {
        /* Insertion: a row moves only past rows of strictly lower preference, so equal ones
         * keep their order. */
        for (uint32_t i = 1; i < n; i++) {
            ranked_row r = rows[i];
            uint32_t j = i;
            for (; j > 0 && rows[j - 1].preference < r.preference; j--)
                rows[j] = rows[j - 1];
            rows[j] = r;
        }
    } else {
        qsort(rows, n, sizeof *rows, by_preference);
    }
    for (uint32_t i = 0; i < n; i++)
        out[i] = labels[rows[i].row];
    if (rows != stack)
        free(rows);
    return EDGE_OK;
}
