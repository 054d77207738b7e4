/*
 * slot_set.h - a set of slots (int32 >= 0) for one call: open addressing with linear probing,
 * on the caller's stack up to SLOT_SET_ON_STACK entries, on the heap past that.
 *
 * Why: a decision's candidates are deduplicated (the seeded draw against its own picks, the
 * draw and the MRU head against the slots already listed). A linear scan per slot made that
 * quadratic: at 256 candidates it was most of a decision's C time. Membership here is O(1)
 * expected, and the answers, hence the candidates and their order, are the same.
 */
#ifndef EDGE_SLOT_SET_H
#define EDGE_SLOT_SET_H

#include <stdint.h>
#include <stdlib.h>

#define SLOT_SET_ON_STACK 512 /* entries: 2 KiB, room for 256 members at load 1/2 */

typedef struct {
    int32_t *entries; /* -1: empty */
    uint32_t mask;    /* capacity - 1, capacity a power of two */
    uint32_t shift;   /* 32 - log2(capacity): the hash keeps a product's top bits */
    int on_heap;
} slot_set;

/* A set for up to `members` slots, at load at most 1/2. 0, or -1 when the heap is out. */
static inline int slot_set_init(slot_set *set, int32_t *stack, uint32_t members) {
    uint64_t capacity = 16;
    uint32_t bits = 4;
    while (capacity < 2 * (uint64_t)members) {
        capacity *= 2;
        bits++;
    }
    if (capacity > UINT32_MAX)
        return -1;
    set->on_heap = capacity > SLOT_SET_ON_STACK;
    set->entries = set->on_heap ? malloc((size_t)capacity * sizeof *set->entries) : stack;
    if (!set->entries)
        return -1;
    set->mask = (uint32_t)capacity - 1;
    set->shift = 32 - bits;
    for (uint64_t i = 0; i < capacity; i++)
        set->entries[i] = -1;
    return 0;
}

static inline void slot_set_free(slot_set *set) {
    if (set->on_heap)
        free(set->entries);
    set->entries = NULL;
}

/* Adds `slot`; 1 if it was not there, 0 if it was. At most `members` distinct slots. */
static inline int slot_set_add(slot_set *set, int32_t slot) {
    /* Fibonacci hashing: the product's top bits, so slots equal modulo the capacity (which the
     * low bits alone would put in one bucket) spread. */
    uint32_t i = ((uint32_t)slot * 2654435769u) >> set->shift;
    while (set->entries[i] >= 0) {
        if (set->entries[i] == slot)
            return 0;
        i = (i + 1) & set->mask;
    }
    set->entries[i] = slot;
    return 1;
}

#endif
