/*
 * learned.c - the learned eviction policy's candidates and network inputs (edge/learned/
 * network.py's model_inputs, feature schema 2), for the serving path and the trainer: one call
 * per decision instead of a numpy or Python call per step.
 */
#include "edge.h"
#include "slot_set.h"

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

/* Appends to out[*n] the slots of src[0..m) not yet in `listed` (which holds out[0..*n)), in
 * src order, and adds them to it. */
static void append_new(int32_t *out, uint32_t *n, slot_set *listed, const int32_t *src,
                       uint32_t m) {
    for (uint32_t r = 0; r < m; r++) {
        if (slot_set_add(listed, src[r]))
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
    if (!k_head && !k_rand) {
        *n_out = n;
        return EDGE_OK;
    }
    edge_index_totals totals;
    int rc = edge_index_totals_get(idx, &totals);
    if (rc != EDGE_OK)
        return rc;
    /* Members: at most the slots asked for, and never more than the resident keys. */
    uint64_t asked = (uint64_t)k_tail + k_head + k_rand;
    int32_t stack[SLOT_SET_ON_STACK];
    slot_set listed;
    if (slot_set_init(&listed, stack, asked < totals.count ? (uint32_t)asked : totals.count) != 0)
        return EDGE_ERR_NOMEM;
    for (uint32_t i = 0; i < n; i++)
        slot_set_add(&listed, out[i]);
    /* The head walk and the draw are read into the space after the slots listed so far, then
     * compacted in place (append_new): a kept slot moves down, never past one not yet read. */
    if (k_head) {
        uint32_t m = 0;
        rc = edge_index_walk_mru(idx, k_head, 1, out + n, &m);
        if (rc == EDGE_OK)
            append_new(out, &n, &listed, out + n, m);
    }
    if (k_rand && rc == EDGE_OK) {
        uint32_t m = 0;
        rc = edge_index_sample_unpinned_seeded(idx, seed, k_rand, out + n, &m);
        if (rc == EDGE_OK)
            append_new(out, &n, &listed, out + n, m);
    }
    slot_set_free(&listed);
    if (rc == EDGE_OK)
        *n_out = n;
    return rc;
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

/* Sorts rows[lo, hi) by falling preference by insertion: a row moves only past rows of strictly
 * lower preference, so equal ones keep their order (rows start in row order: ties by row). */
static void insertion_sort(ranked_row *rows, uint32_t lo, uint32_t hi) {
    for (uint32_t i = lo + 1; i < hi; i++) {
        ranked_row r = rows[i];
        uint32_t j = i;
        for (; j > lo && rows[j - 1].preference < r.preference; j--)
            rows[j] = rows[j - 1];
        rows[j] = r;
    }
}

/* Up to this many rows are sorted on the stack by insertion (a decision ranks tens of
 * candidates: no allocation). More are sorted by a stable merge sort with the comparison
 * inlined: runs of MERGE_RUN by insertion, then merged pairwise. It replaced qsort, whose call
 * per comparison made the ranking of 256 candidates cost 10 us of a decision's 60. */
#define RANK_ON_STACK 128
#define MERGE_RUN 32

/* Stable merge sort of rows[0, n) by falling preference; scratch holds n rows. Returns the
 * buffer (rows or scratch) that ends up sorted. */
static ranked_row *merge_sort(ranked_row *rows, ranked_row *scratch, uint32_t n) {
    for (uint32_t lo = 0; lo < n; lo += MERGE_RUN)
        insertion_sort(rows, lo, lo + MERGE_RUN < n ? lo + MERGE_RUN : n);
    ranked_row *from = rows, *to = scratch;
    for (uint32_t width = MERGE_RUN; width < n; width *= 2) {
        for (uint32_t lo = 0; lo < n; lo += 2 * width) {
            uint32_t mid = lo + width < n ? lo + width : n;
            uint32_t hi = mid + width < n ? mid + width : n;
            uint32_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) /* ties from the left run: its rows come first */
                to[k++] = from[j].preference > from[i].preference ? from[j++] : from[i++];
            while (i < mid)
                to[k++] = from[i++];
            while (j < hi)
                to[k++] = from[j++];
        }
        ranked_row *t = from;
        from = to;
        to = t;
    }
    return from;
}

int edge_learned_rank(const float *q, uint32_t n, const int32_t *labels, int32_t *out) {
    if (n && (!q || !labels || !out))
        return EDGE_ERR_INVALID;
    ranked_row stack[RANK_ON_STACK];
    ranked_row *rows = n <= RANK_ON_STACK ? stack : malloc(2 * (size_t)n * sizeof *rows);
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
    const ranked_row *sorted = rows;
    if (rows == stack)
        insertion_sort(rows, 0, n);
    else
        sorted = merge_sort(rows, rows + n, n);
    for (uint32_t i = 0; i < n; i++)
        out[i] = labels[sorted[i].row];
    if (rows != stack)
        free(rows);
    return EDGE_OK;
}
