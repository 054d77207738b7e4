/*
 * index.c - key -> slot index with struct-of-arrays metadata and an intrusive LRU list.
 *
 * Layout: slots are dense integer ids [0, capacity). Per-slot fields live in parallel arrays so
 * that the feature and walk loops stream through memory. The hash table is open addressing with
 * linear probing over int32 slot ids (-1 = empty), kept at load <= 1/2 by sizing it to twice the
 * slot capacity; deletion uses backward shifting, so there are no tombstones and lookups stay
 * short however long the index lives. Free slots are chained through `next`.
 *
 * Ghost list: recently removed keys with their access history (accesses over their
 * residencies, residencies ended), in a ring of removal events whose oldest is overwritten,
 * found through its own linear-probing table (2 cells per entry, backward-shift deletion too).
 * The ring holds GHOST_MIN entries, doubled (up to GHOST_MAX) whenever the resident keys would
 * exceed half of it; growth keeps the live entries, oldest first, and drops the ones taken
 * back. Its size is a function of the index's history alone, not of its initial capacity, so
 * that a trainer's index and a daemon's see the same features for the same events. A key is in
 * the ghost list only while it is not resident: insert takes its entry back into the slot's
 * past_accesses / past_residencies, remove writes it again. This is what lets the feature
 * matrix tell a returning object from a new one (ARC's and S3-FIFO's ghost queues). Memory: 25
 * bytes per ring entry (key, two counts, a live byte, two table cells), 3.2 KiB at init, and at
 * most 4 entries per key of the most ever resident (about 100 bytes per key).
 */
#include "edge.h"
#include "slot_set.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NIL (-1)
#define DEFAULT_CAPACITY 64u
#define MAX_CAPACITY (1u << 30)
#define GHOST_MIN 128u /* ghost ring entries at init: 2 * DEFAULT_CAPACITY */
#define GHOST_MAX (1u << 30) /* the ring stops doubling here (its table: 2^31 cells) */

struct edge_index {
    uint32_t capacity; /* slots */
    uint32_t count;
    uint32_t pinned_count;
    uint64_t bytes;
    uint64_t pinned_bytes;

    /* hash table */
    int32_t *table;
    uint32_t table_mask;

    /* per-slot metadata (struct of arrays) */
    uint64_t *key;
    uint64_t *size;
    uint64_t *accesses;
    double *inserted_at;
    double *last_access;
    double *iat;
    double *load_cost;
    float *demand; /* the router's estimate, set by the owner (0 from insert until then) */
    uint32_t *pins;
    uint32_t *flags;
    uint8_t *used;
    int32_t *prev; /* towards MRU */
    int32_t *next; /* towards LRU; free-list link for unused slots */
    int32_t *live_pos; /* position of the slot in `live` */
    int32_t *live;     /* dense array of used slots, for uniform sampling */
    uint32_t *past_accesses;    /* accesses in earlier residencies (from the ghost list) */
    uint32_t *past_residencies; /* earlier residencies of the key (from the ghost list) */

    /* ghost list (see the top of the file) */
    uint32_t ghost_cap;  /* ring entries, a power of two >= 2 * the most keys ever resident */
    uint32_t ghost_next; /* ring position written next: the oldest entry once the ring is full */
    uint32_t ghost_count; /* live entries */
    uint64_t *ghost_key;
    uint32_t *ghost_accesses;
    uint32_t *ghost_residencies;
    uint8_t *ghost_live; /* 0: never written, or taken back by insert */
    int32_t *ghost_table; /* ring positions, NIL = empty; 2 * ghost_cap cells */
    uint32_t ghost_mask;
    int ghost_off; /* edge_index_forget_removed: no ghost list, EDGE_FEAT_PAST_* stay 0 */

    int32_t mru; /* head */
    int32_t lru; /* tail */
    int32_t free_head;

    uint64_t rng;
};

const char *edge_status_str(int status) {
    switch (status) {
    case EDGE_OK: return "ok";
    case EDGE_ERR_NOT_FOUND: return "key not found";
    case EDGE_ERR_EXISTS: return "key already present";
    case EDGE_ERR_INVALID: return "invalid argument";
    case EDGE_ERR_NOMEM: return "out of memory";
    case EDGE_ERR_CORRUPT: return "index invariant violated";
    case EDGE_ERR_BUSY: return "slot pin state forbids this operation";
    default: return "unknown status";
    }
}

/* splitmix64 finaliser: a strong, cheap mix so sequential keys do not cluster. */
static inline uint64_t mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* splitmix64 over a caller-held state: the index's own (sample_unpinned) or a local copy
 * (sample_unpinned_seeded, which must leave the index unchanged). */
static inline uint64_t rng_next(uint64_t *state) {
    *state += 0x9e3779b97f4a7c15ULL;
    uint64_t z = *state;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, n) without modulo bias (Lemire's multiply-shift with rejection). */
static inline uint32_t rng_below(uint64_t *state, uint32_t n) {
    uint64_t m = (uint64_t)(uint32_t)rng_next(state) * n;
    uint32_t low = (uint32_t)m;
    if (low < n) {
        uint32_t threshold = (uint32_t)(-n) % n;
        while (low < threshold) {
            m = (uint64_t)(uint32_t)rng_next(state) * n;
            low = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

static inline int valid_slot(const edge_index *idx, int32_t slot) {
    return slot >= 0 && (uint32_t)slot < idx->capacity && idx->used[slot];
}

/* ---- hash tables ------------------------------------------------------------------------- */

/* Two tables share this code: the resident keys' (cells hold slot ids, keys in idx->key) and the
 * ghost list's (cells hold ring positions, keys in idx->ghost_key). */

/* The cell of key's entry (its id), or NIL; *pos_out (if not NULL) = that cell, or the empty
 * cell where the key would go. */
static inline int32_t probe_find(const int32_t *table, uint32_t mask, const uint64_t *keys,
                                 uint64_t key, uint32_t *pos_out) {
    uint32_t pos = (uint32_t)mix64(key) & mask;
    for (;;) {
        int32_t e = table[pos];
        if (e == NIL || keys[e] == key) {
            if (pos_out) *pos_out = pos;
            return e;
        }
        pos = (pos + 1) & mask;
    }
}

/* Backward-shift deletion: pull later members of the probe run into the hole. */
static void probe_erase(int32_t *table, uint32_t mask, const uint64_t *keys, uint32_t hole) {
    uint32_t pos = (hole + 1) & mask;
    while (table[pos] != NIL) {
        int32_t e = table[pos];
        uint32_t home = (uint32_t)mix64(keys[e]) & mask;
        /* Move e into the hole if its home is not in the cyclic range (hole, pos]. */
        uint32_t dist_pos = (pos - home) & mask;
        uint32_t dist_hole = (hole - home) & mask;
        if (dist_hole < dist_pos) {
            table[hole] = e;
            hole = pos;
        }
        pos = (pos + 1) & mask;
    }
    table[hole] = NIL;
}

static inline int32_t table_find(const edge_index *idx, uint64_t key, uint32_t *pos_out) {
    return probe_find(idx->table, idx->table_mask, idx->key, key, pos_out);
}

static void table_erase_at(edge_index *idx, uint32_t hole) {
    probe_erase(idx->table, idx->table_mask, idx->key, hole);
}

/* ---- ghost list --------------------------------------------------------------------------- */

static inline uint32_t add_saturating(uint32_t a, uint64_t b) {
    return b >= (uint64_t)(UINT32_MAX - a) ? UINT32_MAX : a + (uint32_t)b;
}

/* Ring position of key's entry (NIL if absent); *pos_out = its table cell or the empty cell
 * where it would go. */
static inline int32_t ghost_find(const edge_index *idx, uint64_t key, uint32_t *pos_out) {
    return probe_find(idx->ghost_table, idx->ghost_mask, idx->ghost_key, key, pos_out);
}

static void ghost_erase_at(edge_index *idx, uint32_t hole) {
    probe_erase(idx->ghost_table, idx->ghost_mask, idx->ghost_key, hole);
}

/* Remembers a removed key, overwriting the oldest entry when the ring is full. The key is not
 * in the list (insert took it out when it became resident). */
static void ghost_remember(edge_index *idx, uint64_t key, uint32_t accesses,
                           uint32_t residencies) {
    uint32_t e = idx->ghost_next, pos;
    if (idx->ghost_live[e]) {
        ghost_find(idx, idx->ghost_key[e], &pos);
        ghost_erase_at(idx, pos);
        idx->ghost_count--;
    }
    ghost_find(idx, key, &pos);
    idx->ghost_key[e] = key;
    idx->ghost_accesses[e] = accesses;
    idx->ghost_residencies[e] = residencies;
    idx->ghost_live[e] = 1;
    idx->ghost_table[pos] = (int32_t)e;
    idx->ghost_count++;
    idx->ghost_next = (e + 1) & (idx->ghost_cap - 1u);
}

/* Takes key's entry out of the list into *accesses / *residencies (0 / 0 if it has none). */
static void ghost_take(edge_index *idx, uint64_t key, uint32_t *accesses,
                       uint32_t *residencies) {
    uint32_t pos;
    int32_t e = ghost_find(idx, key, &pos);
    if (e == NIL) {
        *accesses = *residencies = 0;
        return;
    }
    *accesses = idx->ghost_accesses[e];
    *residencies = idx->ghost_residencies[e];
    idx->ghost_live[e] = 0;
    ghost_erase_at(idx, pos);
    idx->ghost_count--;
}

typedef struct {
    uint64_t *key;
    uint32_t *accesses;
    uint32_t *residencies;
    uint8_t *live;
    int32_t *table;
} ghost_arrays;

static void ghost_arrays_free(ghost_arrays *g) {
    free(g->key);
    free(g->accesses);
    free(g->residencies);
    free(g->live);
    free(g->table);
}

/* New ghost arrays of cap entries (a power of two), all or nothing. */
static int ghost_arrays_alloc(ghost_arrays *g, uint32_t cap) {
    g->key = (uint64_t *)malloc((size_t)cap * sizeof(uint64_t));
    g->accesses = (uint32_t *)malloc((size_t)cap * sizeof(uint32_t));
    g->residencies = (uint32_t *)malloc((size_t)cap * sizeof(uint32_t));
    g->live = (uint8_t *)calloc(cap, sizeof(uint8_t));
    g->table = (int32_t *)malloc((size_t)cap * 2u * sizeof(int32_t));
    if (!g->key || !g->accesses || !g->residencies || !g->live || !g->table) {
        ghost_arrays_free(g);
        return EDGE_ERR_NOMEM;
    }
    return EDGE_OK;
}

/* Moves the ghost list into g (cap entries, >= the old ring), oldest entry first, and rebuilds
 * its table; frees the old arrays. */
static void ghost_move(edge_index *idx, ghost_arrays *g, uint32_t cap) {
    uint32_t n = 0;
    for (uint32_t i = 0; i < idx->ghost_cap; i++) {
        uint32_t e = (idx->ghost_next + i) & (idx->ghost_cap - 1u);
        if (!idx->ghost_live[e]) continue;
        g->key[n] = idx->ghost_key[e];
        g->accesses[n] = idx->ghost_accesses[e];
        g->residencies[n] = idx->ghost_residencies[e];
        g->live[n] = 1;
        n++;
    }
    ghost_arrays old = {idx->ghost_key, idx->ghost_accesses, idx->ghost_residencies,
                        idx->ghost_live, idx->ghost_table};
    ghost_arrays_free(&old);
    idx->ghost_key = g->key;
    idx->ghost_accesses = g->accesses;
    idx->ghost_residencies = g->residencies;
    idx->ghost_live = g->live;
    idx->ghost_table = g->table;
    idx->ghost_cap = cap;
    idx->ghost_mask = cap * 2u - 1u;
    idx->ghost_next = n & (cap - 1u);
    idx->ghost_count = n;
    for (uint32_t i = 0; i < cap * 2u; i++) idx->ghost_table[i] = NIL;
    for (uint32_t e = 0; e < n; e++) {
        uint32_t pos = (uint32_t)mix64(idx->ghost_key[e]) & idx->ghost_mask;
        while (idx->ghost_table[pos] != NIL) pos = (pos + 1) & idx->ghost_mask;
        idx->ghost_table[pos] = (int32_t)e;
    }
}

/* Doubles the ghost ring when one more resident key would exceed half of it. */
static int ghost_reserve(edge_index *idx) {
    if (idx->ghost_off || 2u * (idx->count + 1u) <= idx->ghost_cap || idx->ghost_cap == GHOST_MAX)
        return EDGE_OK;
    ghost_arrays ghost;
    if (ghost_arrays_alloc(&ghost, idx->ghost_cap * 2u) != EDGE_OK) return EDGE_ERR_NOMEM;
    ghost_move(idx, &ghost, idx->ghost_cap * 2u);
    return EDGE_OK;
}

/* ---- LRU list ---------------------------------------------------------------------------- */

static inline void list_unlink(edge_index *idx, int32_t s) {
    int32_t p = idx->prev[s], n = idx->next[s];
    if (p != NIL) idx->next[p] = n; else idx->mru = n;
    if (n != NIL) idx->prev[n] = p; else idx->lru = p;
}

static inline void list_push_mru(edge_index *idx, int32_t s) {
    idx->prev[s] = NIL;
    idx->next[s] = idx->mru;
    if (idx->mru != NIL) idx->prev[idx->mru] = s; else idx->lru = s;
    idx->mru = s;
}

/* ---- growth ------------------------------------------------------------------------------ */

static int grow_array(void **array, size_t elem_size, uint32_t new_cap) {
    void *p = realloc(*array, (size_t)new_cap * elem_size);
    if (!p) return EDGE_ERR_NOMEM;
    *array = p;
    return EDGE_OK;
}

/* Grows every slot array to new_cap and rebuilds the table at 2 * new_cap. On failure the
 * arrays that did grow keep their old contents (realloc preserves them) and capacity is
 * unchanged, so the index stays valid. */
static int grow(edge_index *idx, uint32_t new_cap) {
    if (new_cap > MAX_CAPACITY) return EDGE_ERR_NOMEM;
    uint32_t table_size = new_cap * 2u;
    int32_t *table = (int32_t *)malloc((size_t)table_size * sizeof(int32_t));
    if (!table) return EDGE_ERR_NOMEM;
    struct { void **array; size_t elem_size; } arrays[] = {
        {(void **)&idx->key, sizeof(uint64_t)},       {(void **)&idx->size, sizeof(uint64_t)},
        {(void **)&idx->accesses, sizeof(uint64_t)},  {(void **)&idx->inserted_at, sizeof(double)},
        {(void **)&idx->last_access, sizeof(double)}, {(void **)&idx->iat, sizeof(double)},
        {(void **)&idx->load_cost, sizeof(double)},   {(void **)&idx->pins, sizeof(uint32_t)},
        {(void **)&idx->flags, sizeof(uint32_t)},     {(void **)&idx->used, sizeof(uint8_t)},
        {(void **)&idx->prev, sizeof(int32_t)},       {(void **)&idx->next, sizeof(int32_t)},
        {(void **)&idx->live_pos, sizeof(int32_t)},   {(void **)&idx->live, sizeof(int32_t)},
        {(void **)&idx->past_accesses, sizeof(uint32_t)},
        {(void **)&idx->past_residencies, sizeof(uint32_t)},
        {(void **)&idx->demand, sizeof(float)},
    };
    for (size_t i = 0; i < sizeof(arrays) / sizeof(arrays[0]); i++) {
        if (grow_array(arrays[i].array, arrays[i].elem_size, new_cap) != EDGE_OK) {
            free(table);
            return EDGE_ERR_NOMEM;
        }
    }

    /* New slots go on the free list, lowest id first. */
    for (uint32_t s = idx->capacity; s < new_cap; s++) {
        idx->used[s] = 0;
        idx->next[s] = (s + 1 < new_cap) ? (int32_t)(s + 1) : idx->free_head;
        idx->prev[s] = NIL;
        idx->live_pos[s] = NIL;
    }
    if (new_cap > idx->capacity) idx->free_head = (int32_t)idx->capacity;

    for (uint32_t i = 0; i < table_size; i++) table[i] = NIL;
    free(idx->table);
    idx->table = table;
    idx->table_mask = table_size - 1u;
    idx->capacity = new_cap;
    for (uint32_t i = 0; i < idx->count; i++) {
        int32_t s = idx->live[i];
        uint32_t pos = (uint32_t)mix64(idx->key[s]) & idx->table_mask;
        while (idx->table[pos] != NIL) pos = (pos + 1) & idx->table_mask;
        idx->table[pos] = s;
    }
    return EDGE_OK;
}

/* ---- lifetime ---------------------------------------------------------------------------- */

int edge_index_init(edge_index **out, uint32_t initial_capacity, uint64_t seed) {
    if (!out) return EDGE_ERR_INVALID;
    *out = NULL;
    uint32_t cap = DEFAULT_CAPACITY;
    if (initial_capacity > MAX_CAPACITY) return EDGE_ERR_INVALID;
    while (cap < initial_capacity) cap <<= 1;
    edge_index *idx = (edge_index *)calloc(1, sizeof(edge_index));
    if (!idx) return EDGE_ERR_NOMEM;
    idx->mru = idx->lru = idx->free_head = NIL;
    idx->rng = seed;
    int rc = grow(idx, cap);
    ghost_arrays ghost;
    if (rc == EDGE_OK && (rc = ghost_arrays_alloc(&ghost, GHOST_MIN)) == EDGE_OK)
        ghost_move(idx, &ghost, GHOST_MIN);
    if (rc != EDGE_OK) {
        edge_index_free(idx);
        return rc;
    }
    *out = idx;
    return EDGE_OK;
}

int edge_index_free(edge_index *idx) {
    if (!idx) return EDGE_OK;
    free(idx->table);
    free(idx->key);
    free(idx->size);
    free(idx->accesses);
    free(idx->inserted_at);
    free(idx->last_access);
    free(idx->iat);
    free(idx->load_cost);
    free(idx->demand);
    free(idx->pins);
    free(idx->flags);
    free(idx->used);
    free(idx->prev);
    free(idx->next);
    free(idx->live_pos);
    free(idx->live);
    free(idx->past_accesses);
    free(idx->past_residencies);
    ghost_arrays ghost = {idx->ghost_key, idx->ghost_accesses, idx->ghost_residencies,
                          idx->ghost_live, idx->ghost_table};
    ghost_arrays_free(&ghost);
    free(idx);
    return EDGE_OK;
}

/* ---- single-key operations --------------------------------------------------------------- */

int edge_index_lookup(const edge_index *idx, uint64_t key, int32_t *slot) {
    if (!idx || !slot) return EDGE_ERR_INVALID;
    *slot = table_find(idx, key, NULL);
    return *slot == NIL ? EDGE_ERR_NOT_FOUND : EDGE_OK;
}

static inline void record_access(edge_index *idx, int32_t s, double now, int promote) {
    double gap = now - idx->last_access[s];
    if (gap < 0) gap = 0; /* a clock that steps back must not poison the estimate */
    idx->iat[s] = idx->accesses[s] == 1
                      ? gap
                      : EDGE_IAT_EWMA_ALPHA * gap + (1.0 - EDGE_IAT_EWMA_ALPHA) * idx->iat[s];
    idx->accesses[s] += 1;
    idx->last_access[s] = now;
    if (promote && idx->mru != s) {
        list_unlink(idx, s);
        list_push_mru(idx, s);
    }
}

int edge_index_touch(edge_index *idx, uint64_t key, double now, int32_t *slot) {
    if (!idx || !slot) return EDGE_ERR_INVALID;
    int32_t s = table_find(idx, key, NULL);
    *slot = s;
    if (s == NIL) return EDGE_ERR_NOT_FOUND;
    record_access(idx, s, now, 1);
    return EDGE_OK;
}

static inline void pin_slot(edge_index *idx, int32_t s) {
    if (idx->pins[s]++ == 0) {
        idx->pinned_count++;
        idx->pinned_bytes += idx->size[s];
    }
}

int edge_index_acquire(edge_index *idx, uint64_t key, double now, int32_t *slot) {
    if (!idx || !slot) return EDGE_ERR_INVALID;
    int32_t s = table_find(idx, key, NULL);
    *slot = s;
    if (s == NIL) return EDGE_ERR_NOT_FOUND;
    if (idx->pins[s] == UINT32_MAX) return EDGE_ERR_INVALID; /* refused before any change */
    record_access(idx, s, now, 1);
    pin_slot(idx, s);
    return EDGE_OK;
}

int edge_index_acquire_slot(edge_index *idx, int32_t slot, double now) {
    if (!idx || !valid_slot(idx, slot) || idx->pins[slot] == UINT32_MAX) return EDGE_ERR_INVALID;
    record_access(idx, slot, now, 1);
    pin_slot(idx, slot);
    return EDGE_OK;
}

int edge_index_insert(edge_index *idx, uint64_t key, uint64_t size, double load_cost, double now,
                      uint32_t pins, int32_t *slot) {
    if (!idx || !slot || size == 0) return EDGE_ERR_INVALID;
    *slot = NIL;
    uint32_t pos;
    if (table_find(idx, key, &pos) != NIL) return EDGE_ERR_EXISTS;
    if (idx->count == idx->capacity) {
        int rc = grow(idx, idx->capacity * 2u);
        if (rc != EDGE_OK) return rc;
        table_find(idx, key, &pos); /* the table was rebuilt */
    }
    if (ghost_reserve(idx) != EDGE_OK) return EDGE_ERR_NOMEM; /* a grown slot array is harmless */
    int32_t s = idx->free_head;
    idx->free_head = idx->next[s];

    idx->used[s] = 1;
    idx->key[s] = key;
    idx->size[s] = size;
    idx->accesses[s] = 1;
    idx->inserted_at[s] = now;
    idx->last_access[s] = now;
    idx->iat[s] = 0.0;
    idx->load_cost[s] = load_cost;
    idx->demand[s] = 0.0f;
    idx->pins[s] = 0;
    idx->flags[s] = 0;
    if (idx->ghost_off)
        idx->past_accesses[s] = idx->past_residencies[s] = 0;
    else
        ghost_take(idx, key, &idx->past_accesses[s], &idx->past_residencies[s]);
    idx->table[pos] = s;
    idx->live_pos[s] = (int32_t)idx->count;
    idx->live[idx->count] = s;
    idx->count++;
    idx->bytes += size;
    list_push_mru(idx, s);
    if (pins > 0) {
        idx->pins[s] = pins;
        idx->pinned_count++;
        idx->pinned_bytes += size;
    }
    *slot = s;
    return EDGE_OK;
}

static void remove_slot(edge_index *idx, int32_t s, uint32_t table_pos) {
    if (!idx->ghost_off)
        ghost_remember(idx, idx->key[s], add_saturating(idx->past_accesses[s], idx->accesses[s]),
                       add_saturating(idx->past_residencies[s], 1));
    table_erase_at(idx, table_pos);
    list_unlink(idx, s);
    /* Keep `live` dense: move the last live slot into the hole. */
    int32_t hole = idx->live_pos[s];
    int32_t last = idx->live[idx->count - 1];
    idx->live[hole] = last;
    idx->live_pos[last] = hole;
    idx->live_pos[s] = NIL;
    idx->count--;
    idx->bytes -= idx->size[s];
    idx->used[s] = 0;
    idx->prev[s] = NIL;
    idx->next[s] = idx->free_head;
    idx->free_head = s;
}

int edge_index_forget_removed(edge_index *idx) {
    if (!idx || idx->count || idx->ghost_count) return EDGE_ERR_INVALID;
    idx->ghost_off = 1;
    return EDGE_OK;
}

int edge_index_remove(edge_index *idx, uint64_t key) {
    if (!idx) return EDGE_ERR_INVALID;
    uint32_t pos;
    int32_t s = table_find(idx, key, &pos);
    if (s == NIL) return EDGE_ERR_NOT_FOUND;
    if (idx->pins[s] > 0) return EDGE_ERR_BUSY;
    remove_slot(idx, s, pos);
    return EDGE_OK;
}

int edge_index_pin(edge_index *idx, int32_t slot) {
    if (!idx || !valid_slot(idx, slot) || idx->pins[slot] == UINT32_MAX) return EDGE_ERR_INVALID;
    pin_slot(idx, slot);
    return EDGE_OK;
}



int edge_index_set_flags(edge_index *idx, int32_t slot, uint32_t flags) {
    if (!idx || !valid_slot(idx, slot)) return EDGE_ERR_INVALID;
    idx->flags[slot] = flags;
    return EDGE_OK;
}

int edge_index_set_demand(edge_index *idx, int32_t slot, float demand) {
    /* !(demand >= 0) also refuses NaN; an infinite estimate is no estimate either. */
    if (!idx || !valid_slot(idx, slot) || !(demand >= 0.0f) || isinf(demand))
        return EDGE_ERR_INVALID;
    idx->demand[slot] = demand;
    return EDGE_OK;
}

int edge_index_slot_info(const edge_index *idx, int32_t slot, edge_slot_info *out) {
    if (!idx || !out || !valid_slot(idx, slot)) return EDGE_ERR_INVALID;
    out->key = idx->key[slot];
    out->size = idx->size[slot];
    out->accesses = idx->accesses[slot];
    out->inserted_at = idx->inserted_at[slot];
    out->last_access = idx->last_access[slot];
    out->iat_ewma = idx->iat[slot];
    out->load_cost = idx->load_cost[slot];
    out->pin_count = idx->pins[slot];
    out->flags = idx->flags[slot];
    out->past_accesses = idx->past_accesses[slot];
    out->past_residencies = idx->past_residencies[slot];
    out->demand = idx->demand[slot];
    return EDGE_OK;
}

int edge_index_pin_count(const edge_index *idx, int32_t slot, uint32_t *out) {
    if (!idx || !out || !valid_slot(idx, slot)) return EDGE_ERR_INVALID;
    *out = idx->pins[slot];
    return EDGE_OK;
}

int edge_index_totals_get(const edge_index *idx, edge_index_totals *out) {
    if (!idx || !out) return EDGE_ERR_INVALID;
    out->count = idx->count;
    out->pinned_count = idx->pinned_count;
    out->bytes = idx->bytes;
    out->pinned_bytes = idx->pinned_bytes;
    out->capacity = idx->capacity;
    out->remembered = idx->ghost_count;
    return EDGE_OK;
}

/* ---- many keys at once -------------------------------------------------------------------- */

int edge_index_lookup_many(const edge_index *idx, const uint64_t *keys, uint32_t n,
                           int32_t *out_slots, uint32_t *n_found) {
    if (!idx || (n && (!keys || !out_slots)) || !n_found) return EDGE_ERR_INVALID;
    uint32_t found = 0;
    for (uint32_t i = 0; i < n; i++) {
        int32_t s = table_find(idx, keys[i], NULL);
        out_slots[i] = s;
        found += (s != NIL);
    }
    *n_found = found;
    return EDGE_OK;
}

int edge_index_touch_many(edge_index *idx, const uint64_t *keys, uint32_t n, double now,
                          int32_t *out_slots, uint32_t *n_found) {
    if (!idx || (n && (!keys || !out_slots)) || !n_found) return EDGE_ERR_INVALID;
    uint32_t found = 0;
    for (uint32_t i = 0; i < n; i++) {
        int32_t s = table_find(idx, keys[i], NULL);
        out_slots[i] = s;
        if (s != NIL) {
            record_access(idx, s, now, 1);
            found++;
        }
    }
    *n_found = found;
    return EDGE_OK;
}

int edge_index_acquire_many(edge_index *idx, const uint64_t *keys, uint32_t n, double now,
                            int32_t *out_slots, uint32_t *n_found) {
    int rc = edge_index_lookup_many(idx, keys, n, out_slots, n_found);
    if (rc != EDGE_OK) return rc;
    if (*n_found < n) return EDGE_ERR_NOT_FOUND;
    /* Checked before any change: n more pins cannot overflow any slot's count. */
    for (uint32_t i = 0; i < n; i++) {
        if (idx->pins[out_slots[i]] > UINT32_MAX - n) return EDGE_ERR_INVALID;
    }
    for (uint32_t i = 0; i < n; i++) {
        record_access(idx, out_slots[i], now, 1);
        pin_slot(idx, out_slots[i]);
    }
    return EDGE_OK;
}

static inline void unpin_slot(edge_index *idx, int32_t s) {
    if (--idx->pins[s] == 0) {
        idx->pinned_count--;
        idx->pinned_bytes -= idx->size[s];
    }
}

int edge_index_unpin(edge_index *idx, int32_t slot) {
    if (!idx || !valid_slot(idx, slot)) return EDGE_ERR_INVALID;
    if (idx->pins[slot] == 0) return EDGE_ERR_BUSY;
    unpin_slot(idx, slot);
    return EDGE_OK;
}

int edge_index_pin_many(edge_index *idx, const int32_t *slots, uint32_t n) {
    if (!idx || (n && !slots)) return EDGE_ERR_INVALID;
    for (uint32_t i = 0; i < n; i++) {
        if (!valid_slot(idx, slots[i]) || idx->pins[slots[i]] > UINT32_MAX - n)
            return EDGE_ERR_INVALID;
    }
    for (uint32_t i = 0; i < n; i++) pin_slot(idx, slots[i]);
    return EDGE_OK;
}

int edge_index_unpin_many(edge_index *idx, const int32_t *slots, uint32_t n) {
    if (!idx || (n && !slots)) return EDGE_ERR_INVALID;
    for (uint32_t i = 0; i < n; i++) {
        if (!valid_slot(idx, slots[i])) return EDGE_ERR_INVALID;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (idx->pins[slots[i]] == 0) {
            /* A slot listed more often than it is pinned: put back what this call took. */
            while (i-- > 0) pin_slot(idx, slots[i]);
            return EDGE_ERR_BUSY;
        }
        unpin_slot(idx, slots[i]);
    }
    return EDGE_OK;
}

int edge_index_touch_slots(edge_index *idx, const int32_t *slots, uint32_t n, double now) {
    if (!idx || (n && !slots)) return EDGE_ERR_INVALID;
    for (uint32_t i = 0; i < n; i++) {
        if (!valid_slot(idx, slots[i])) return EDGE_ERR_INVALID;
    }
    for (uint32_t i = 0; i < n; i++) record_access(idx, slots[i], now, 1);
    return EDGE_OK;
}

/* ---- candidates for eviction ------------------------------------------------------------- */

/* Up to k slots of the LRU list from `start`, following `step` (prev: towards the MRU end,
 * next: towards the LRU end). */
static int walk(const edge_index *idx, int32_t start, const int32_t *step, uint32_t k,
                int skip_pinned, int32_t *out, uint32_t *n_out) {
    uint32_t n = 0;
    for (int32_t s = start; s != NIL && n < k; s = step[s]) {
        if (skip_pinned && idx->pins[s]) continue;
        out[n++] = s;
    }
    *n_out = n;
    return EDGE_OK;
}

int edge_index_walk_lru(const edge_index *idx, uint32_t k, int skip_pinned, int32_t *out,
                        uint32_t *n_out) {
    if (!idx || !n_out || (k && !out)) return EDGE_ERR_INVALID;
    return walk(idx, idx->lru, idx->prev, k, skip_pinned, out, n_out);
}

int edge_index_walk_mru(const edge_index *idx, uint32_t k, int skip_pinned, int32_t *out,
                        uint32_t *n_out) {
    if (!idx || !n_out || (k && !out)) return EDGE_ERR_INVALID;
    return walk(idx, idx->mru, idx->next, k, skip_pinned, out, n_out);
}

static int sample_unpinned(const edge_index *idx, uint64_t *rng, uint32_t k, int32_t *out,
                           uint32_t *n_out) {
    if (!idx || !n_out || (k && !out)) return EDGE_ERR_INVALID;
    uint32_t unpinned = idx->count - idx->pinned_count;
    uint32_t n = 0;
    if (k >= unpinned) {
        for (uint32_t i = 0; i < idx->count && n < unpinned; i++) {
            int32_t s = idx->live[i];
            if (!idx->pins[s]) out[n++] = s;
        }
    } else if (2u * unpinned >= idx->count) {
        /* Mostly unpinned: draw, reject pinned and repeats (expected < 2 draws per pick while
         * k <= unpinned / 2; the repeats are found in a set, O(1) each). */
        int32_t stack[SLOT_SET_ON_STACK];
        slot_set drawn;
        if (slot_set_init(&drawn, stack, k) != 0) return EDGE_ERR_NOMEM;
        while (n < k) {
            int32_t s = idx->live[rng_below(rng, idx->count)];
            if (idx->pins[s]) continue;
            if (slot_set_add(&drawn, s)) out[n++] = s;
        }
        slot_set_free(&drawn);
    } else {
        /* Mostly pinned: reservoir sampling over the unpinned ones, exact and O(count). */
        uint32_t seen = 0;
        for (uint32_t i = 0; i < idx->count; i++) {
            int32_t s = idx->live[i];
            if (idx->pins[s]) continue;
            if (seen < k) {
                out[seen] = s;
            } else {
                uint32_t j = rng_below(rng, seen + 1);
                if (j < k) out[j] = s;
            }
            seen++;
        }
        n = k;
    }
    *n_out = n;
    return EDGE_OK;
}

int edge_index_sample_unpinned(edge_index *idx, uint32_t k, int32_t *out, uint32_t *n_out) {
    if (!idx) return EDGE_ERR_INVALID;
    return sample_unpinned(idx, &idx->rng, k, out, n_out);
}

int edge_index_sample_unpinned_seeded(const edge_index *idx, uint64_t seed, uint32_t k,
                                      int32_t *out, uint32_t *n_out) {
    uint64_t rng = seed; /* a local generator: the index's own does not move */
    return sample_unpinned(idx, &rng, k, out, n_out);
}

int edge_index_features(const edge_index *idx, const int32_t *slots, uint32_t n, double now,
                        float *out) {
    if (!idx || (n && (!slots || !out))) return EDGE_ERR_INVALID;
    for (uint32_t i = 0; i < n; i++) {
        if (!valid_slot(idx, slots[i])) return EDGE_ERR_INVALID;
    }
    for (uint32_t i = 0; i < n; i++) {
        int32_t s = slots[i];
        float *row = out + (size_t)i * EDGE_N_FEATURES;
        double residency = now - idx->inserted_at[s];
        row[EDGE_FEAT_AGE] = (float)(now - idx->last_access[s]);
        row[EDGE_FEAT_SIZE] = (float)idx->size[s];
        row[EDGE_FEAT_ACCESSES] = (float)idx->accesses[s];
        row[EDGE_FEAT_IAT] = (float)(idx->accesses[s] > 1 ? idx->iat[s] : residency);
        row[EDGE_FEAT_LOAD_COST] = (float)idx->load_cost[s];
        row[EDGE_FEAT_RESIDENCY] = (float)residency;
        row[EDGE_FEAT_PAST_ACCESSES] = (float)idx->past_accesses[s];
        row[EDGE_FEAT_PAST_RESIDENCIES] = (float)idx->past_residencies[s];
    }
    return EDGE_OK;
}

/* ---- trace replay ------------------------------------------------------------------------ */

int edge_index_replay(edge_index *idx, int policy, const uint64_t *keys, const uint64_t *sizes,
                      const double *times, uint64_t n, uint64_t budget, uint8_t *hits_out,
                      uint64_t *n_hits, uint64_t *bytes_hit, uint64_t *n_evictions,
                      uint64_t *n_done) {
    if (!idx || (n && (!keys || !sizes)) || !n_hits || !bytes_hit || !n_evictions || !n_done)
        return EDGE_ERR_INVALID;
    if (policy != EDGE_REPLAY_LRU && policy != EDGE_REPLAY_FIFO) return EDGE_ERR_INVALID;
    const int promote = policy == EDGE_REPLAY_LRU;
    uint64_t hits = 0, hit_bytes = 0, evictions = 0;
    int rc = EDGE_OK;
    uint64_t i;
    for (i = 0; i < n; i++) {
        double now = times ? times[i] : (double)i;
        uint64_t key = keys[i], size = sizes[i];
        uint32_t pos;
        int32_t s = table_find(idx, key, &pos);
        if (s != NIL) {
            record_access(idx, s, now, promote);
            hits++;
            hit_bytes += size; /* the request's size, as the caller counts requested bytes */
            if (hits_out) hits_out[i] = 1;
            continue;
        }
        if (hits_out) hits_out[i] = 0;
        if (size == 0) { rc = EDGE_ERR_INVALID; break; }
        if (size > budget) continue; /* never admitted */
        int32_t victim = idx->lru;
        while (idx->bytes > budget || size > budget - idx->bytes) { /* no wrap-around */
            while (victim != NIL && idx->pins[victim]) victim = idx->prev[victim];
            if (victim == NIL) { rc = EDGE_ERR_BUSY; break; }
            int32_t next_victim = idx->prev[victim];
            uint32_t vpos;
            table_find(idx, idx->key[victim], &vpos);
            remove_slot(idx, victim, vpos);
            evictions++;
            victim = next_victim;
        }
        if (rc != EDGE_OK) break;
        rc = edge_index_insert(idx, key, size, 0.0, now, 0, &s);
        if (rc != EDGE_OK) break;
    }
    *n_hits = hits;
    *bytes_hit = hit_bytes;
    *n_evictions = evictions;
    *n_done = i;
    return rc;
}

/* ---- checking ---------------------------------------------------------------------------- */

#define CHECK(cond)                                                                              \
    do {                                                                                         \
        if (!(cond)) return EDGE_ERR_CORRUPT;                                                    \
    } while (0)

int edge_index_verify(const edge_index *idx) {
    if (!idx) return EDGE_ERR_INVALID;
    CHECK(idx->count <= idx->capacity);
    CHECK(idx->table_mask + 1u == 2u * idx->capacity);

    /* Slots: totals and the dense live array. */
    uint32_t used = 0, pinned = 0;
    uint64_t bytes = 0, pinned_bytes = 0;
    for (uint32_t s = 0; s < idx->capacity; s++) {
        if (!idx->used[s]) {
            CHECK(idx->live_pos[s] == NIL);
            continue;
        }
        used++;
        CHECK(idx->size[s] > 0);
        CHECK(idx->accesses[s] >= 1);
        bytes += idx->size[s];
        if (idx->pins[s]) {
            pinned++;
            pinned_bytes += idx->size[s];
        }
        int32_t lp = idx->live_pos[s];
        CHECK(lp >= 0 && (uint32_t)lp < idx->count && idx->live[lp] == (int32_t)s);
        /* The table finds this key at this slot. */
        CHECK(table_find(idx, idx->key[s], NULL) == (int32_t)s);
    }
    CHECK(used == idx->count && pinned == idx->pinned_count);
    CHECK(bytes == idx->bytes && pinned_bytes == idx->pinned_bytes);

    /* Table: every entry is a used slot, and no empty cell splits a key's probe run. */
    uint32_t entries = 0;
    for (uint32_t pos = 0; pos <= idx->table_mask; pos++) {
        int32_t s = idx->table[pos];
        if (s == NIL) continue;
        entries++;
        CHECK(s >= 0 && (uint32_t)s < idx->capacity && idx->used[s]);
        for (uint32_t p = (uint32_t)mix64(idx->key[s]) & idx->table_mask; p != pos;
             p = (p + 1) & idx->table_mask)
            CHECK(idx->table[p] != NIL);
    }
    CHECK(entries == idx->count);

    /* LRU list: walks both ways over exactly the used slots. */
    uint32_t walked = 0;
    int32_t prev = NIL;
    for (int32_t s = idx->mru; s != NIL; s = idx->next[s]) {
        CHECK(s >= 0 && (uint32_t)s < idx->capacity && idx->used[s]);
        CHECK(idx->prev[s] == prev);
        CHECK(++walked <= idx->count);
        prev = s;
    }
    CHECK(walked == idx->count && idx->lru == prev);

    /* Free list: exactly the unused slots. */
    uint32_t free_slots = 0;
    for (int32_t s = idx->free_head; s != NIL; s = idx->next[s]) {
        CHECK(s >= 0 && (uint32_t)s < idx->capacity && !idx->used[s]);
        CHECK(++free_slots <= idx->capacity - idx->count);
    }
    CHECK(free_slots == idx->capacity - idx->count);

    /* Ghost list: the table holds exactly the live ring entries, each findable, none of them a
     * resident key. */
    CHECK(idx->ghost_cap >= GHOST_MIN && (idx->ghost_cap & (idx->ghost_cap - 1u)) == 0);
    CHECK(idx->ghost_cap <= GHOST_MAX && idx->ghost_mask + 1u == 2u * idx->ghost_cap);
    CHECK(2u * idx->count <= idx->ghost_cap || idx->ghost_cap == GHOST_MAX || idx->ghost_off);
    CHECK(!idx->ghost_off || idx->ghost_count == 0);
    CHECK(idx->ghost_next < idx->ghost_cap);
    uint32_t live_entries = 0, ghost_entries = 0;
    for (uint32_t e = 0; e < idx->ghost_cap; e++) {
        if (!idx->ghost_live[e]) continue;
        live_entries++;
        uint32_t pos;
        CHECK(ghost_find(idx, idx->ghost_key[e], &pos) == (int32_t)e);
        CHECK(table_find(idx, idx->ghost_key[e], NULL) == NIL);
    }
    for (uint32_t pos = 0; pos <= idx->ghost_mask; pos++) {
        int32_t e = idx->ghost_table[pos];
        if (e == NIL) continue;
        ghost_entries++;
        CHECK(e >= 0 && (uint32_t)e < idx->ghost_cap && idx->ghost_live[e]);
    }
    CHECK(live_entries == idx->ghost_count && ghost_entries == idx->ghost_count);
    return EDGE_OK;
}
