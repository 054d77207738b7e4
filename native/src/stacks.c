/*
 * stacks.c - priority-stack depth histograms for the MoE routing analysis (edge/moe/analysis.py:
 * LFU and Belady curves, SCH). The Python loops they replace took minutes on a 1e5-token,
 * 32-layer trace: every use walks the stack. tests/test_moe_analysis.py holds both against a
 * plain simulation of one cache per capacity.
 */
#include "edge.h"

#include <stdlib.h>
#include <string.h>

#define TS_BITS 40 /* priorities pack (count, timestamp), as _TS_BITS in analysis.py */

typedef struct {
    int32_t *stack; /* experts, top first; at most cap */
    int32_t *pos;   /* pos[x] = x's level on the stack, or -1 */
    uint8_t *seen;
    uint32_t size, cap, n_seen;
} stack_state;

static int state_init(stack_state *s, uint32_t n_experts, uint32_t cap) {
    s->stack = malloc(sizeof(int32_t) * cap);
    s->pos = malloc(sizeof(int32_t) * n_experts);
    s->seen = calloc(n_experts, 1);
    if (!s->stack || !s->pos || !s->seen) {
        free(s->stack), free(s->pos), free(s->seen);
        return EDGE_ERR_NOMEM;
    }
    for (uint32_t x = 0; x < n_experts; x++)
        s->pos[x] = -1;
    s->size = 0, s->cap = cap, s->n_seen = 0;
    return EDGE_OK;
}

static void state_free(stack_state *s) {
    free(s->stack), free(s->pos), free(s->seen);
}

/* Counts a use of x at its depth (the first-use convention for a first use); returns the depth,
 * size for an expert not on the stack. */
static uint32_t count_use(stack_state *s, int32_t x, uint64_t *hist) {
    int32_t at = s->pos[x];
    if (at >= 0) {
        hist[at]++;
        return (uint32_t)at;
    }
    if (s->seen[x]) {
        hist[s->cap]++;
    } else {
        hist[s->n_seen < s->cap ? s->n_seen : s->cap]++;
        s->seen[x] = 1;
        s->n_seen++;
    }
    return s->size;
}

static void place(stack_state *s, uint32_t level, int32_t x) {
    s->stack[level] = x;
    s->pos[x] = (int32_t)level;
}

/* Mattson's update (analysis.py's _stack_update): x, at depth >= 1 or absent (depth == size),
 * goes on top; above its old place each level keeps the higher-priority of itself and the
 * expert carried down, the lower is carried on; carried past cap, it leaves every cache. */
static void stack_update(stack_state *s, const int64_t *priority, int32_t x, uint32_t depth) {
    int32_t carried = s->stack[0];
    int64_t carried_priority = priority[carried];
    uint32_t top = depth < s->size ? depth : s->size;
    for (uint32_t level = 1; level < top; level++) {
        int32_t here = s->stack[level];
        if (priority[here] < carried_priority) {
            place(s, level, carried);
            carried = here;
            carried_priority = priority[here];
        }
    }
    if (depth < s->size) {
        place(s, depth, carried);
    } else if (s->size < s->cap) {
        place(s, s->size++, carried);
    } else {
        s->pos[carried] = -1;
    }
    place(s, 0, x);
}

/* Puts x on top after a use found it at depth (an empty stack takes x). */
static void use(stack_state *s, const int64_t *priority, int32_t x, uint32_t depth) {
    if (s->size == 0) {
        place(s, 0, x);
        s->size = 1;
    } else if (depth) {
        stack_update(s, priority, x, depth);
    }
}

static int check_experts(const int32_t *xs, uint64_t n, uint32_t n_experts) {
    for (uint64_t i = 0; i < n; i++)
        if (xs[i] < 0 || (uint32_t)xs[i] >= n_experts)
            return EDGE_ERR_INVALID;
    return EDGE_OK;
}

int edge_priority_stack_hist(const int32_t *uses, const int64_t *after, uint64_t n,
                             uint32_t n_experts, uint32_t cap, uint64_t *hist) {
    if (!hist || !n_experts || !cap || (n && (!uses || !after)))
        return EDGE_ERR_INVALID;
    memset(hist, 0, sizeof(uint64_t) * ((size_t)cap + 1));
    if (check_experts(uses, n, n_experts) != EDGE_OK)
        return EDGE_ERR_INVALID;
    stack_state s;
    int64_t *priority = calloc(n_experts, sizeof(int64_t));
    if (!priority || state_init(&s, n_experts, cap) != EDGE_OK) {
        free(priority);
        return EDGE_ERR_NOMEM;
    }
    for (uint64_t i = 0; i < n; i++) {
        int32_t x = uses[i];
        use(&s, priority, x, count_use(&s, x, hist));
        priority[x] = after[i];
    }
    state_free(&s);
    free(priority);
    return EDGE_OK;
}

int edge_lookahead_stack_hist(const int32_t *tokens, uint64_t n_tokens, uint32_t top_k,
                              uint32_t n_experts, uint32_t m, uint32_t cap, uint64_t *hist) {
    if (!hist || !n_experts || !cap || !top_k || !m || (n_tokens && !tokens))
        return EDGE_ERR_INVALID;
    memset(hist, 0, sizeof(uint64_t) * ((size_t)cap + 1));
    uint64_t n = n_tokens * top_k;
    if (check_experts(tokens, n, n_experts) != EDGE_OK)
        return EDGE_ERR_INVALID;
    stack_state s;
    int64_t *ahead = calloc(n_experts, sizeof(int64_t));
    int64_t *last_use = calloc(n_experts, sizeof(int64_t));
    int64_t *priority = calloc(n_experts, sizeof(int64_t));
    if (!ahead || !last_use || !priority || state_init(&s, n_experts, cap) != EDGE_OK) {
        free(ahead), free(last_use), free(priority);
        return EDGE_ERR_NOMEM;
    }
    for (uint64_t i = 0; i < (m < n_tokens ? m : n_tokens) * top_k; i++)
        ahead[tokens[i]]++;
    for (uint32_t x = 0; x < n_experts; x++)
        priority[x] = ahead[x] << TS_BITS;
    int64_t clock = 0;
    for (uint64_t t = 0; t < n_tokens; t++) {
        const int32_t *token = tokens + t * top_k;
        /* Lookups against the cache as the token found it (the paper ranks before updating). */
        for (uint32_t q = 0; q < top_k; q++)
            (void)count_use(&s, token[q], hist);
        for (uint32_t q = 0; q < top_k; q++) {
            int32_t x = token[q];
            if (s.size == 0 || s.stack[0] != x)
                use(&s, priority, x, s.pos[x] >= 0 ? (uint32_t)s.pos[x] : s.size);
            clock++;
            ahead[x]--;
            last_use[x] = clock;
            priority[x] = (ahead[x] << TS_BITS) | clock;
        }
        if (t + m < n_tokens) {
            const int32_t *entering = tokens + (t + m) * top_k;
            for (uint32_t q = 0; q < top_k; q++) {
                int32_t x = entering[q];
                ahead[x]++;
                priority[x] = (ahead[x] << TS_BITS) | last_use[x];
            }
        }
    }
    state_free(&s);
    free(ahead), free(last_use), free(priority);
    return EDGE_OK;
}
