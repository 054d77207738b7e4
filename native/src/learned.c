/*
 * learned.c - the learned eviction policy's network inputs (edge/learned/network.py's
 * model_inputs, feature schema 1), for the serving path: one call per decision instead of a
 * numpy call per step.
 */
#include "edge.h"

#include <math.h>

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
