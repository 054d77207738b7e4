/*
 * edge.h - the one public header of edge's C core.
 *
 * An index from 64-bit keys to slots with per-slot metadata, an intrusive LRU list and the
 * operations the pager, its eviction policies and the trace simulator need on their hot paths.
 *
 * Conventions
 *  - Every function returns an edge_status (EDGE_OK == 0); results come back through out
 *    parameters. edge_status_str() names any status. Nothing here prints, exits or aborts.
 *  - Every edge_<thing>_init has an edge_<thing>_free.
 *  - Ownership: an edge_index owns all of its memory. Every pointer argument is borrowed for the
 *    duration of the call only; output buffers are owned and sized by the caller.
 *  - Not thread-safe: one index must be used by one thread at a time (the Python PagedCache
 *    holds a lock around every call).
 *  - Time is a double in caller-chosen units (seconds from a monotonic clock in the daemon,
 *    virtual time in the simulator). The core never reads a clock itself.
 *  - Allocation happens only in init, in insert when the slot arrays grow (capacity doubles and
 *    the hash table is rebuilt) or the ghost list does, and never on lookup, touch, pin, unpin,
 *    walk or feature paths.
 *  - A slot id is stable while its key is resident; after remove it may be reused by another key.
 *  - Removed keys are remembered in a ghost list, so that a key inserted again carries its
 *    history into the feature matrix (EDGE_FEAT_PAST_*): a ring of the last G removals (key,
 *    accesses, residencies; a key inserted again leaves it), G = 128 at init, doubled (up to
 *    2^30) when the resident keys would exceed G / 2 (growth drops the entries inserted again).
 *    G depends on the index's history alone, never on initial_capacity.
 */
#ifndef EDGE_H
#define EDGE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    EDGE_OK = 0,
    EDGE_ERR_NOT_FOUND = 1, /* key not resident */
    EDGE_ERR_EXISTS = 2,    /* insert of a key that is already resident */
    EDGE_ERR_INVALID = 3,   /* bad argument: NULL pointer, bad slot id, zero size, ... */
    EDGE_ERR_NOMEM = 4,     /* allocation failed; the index is unchanged */
    EDGE_ERR_CORRUPT = 5,   /* edge_index_verify found a broken invariant */
    EDGE_ERR_BUSY = 6       /* the slot is pinned (remove) or not pinned (unpin) */
} edge_status;

/* A static string naming the status; never NULL, never to be freed. */
const char *edge_status_str(int status);

typedef struct edge_index edge_index;

/* Columns of the feature matrix written by edge_index_features, in this order. The order is an
 * interface: a shipped learned policy (an ONNX model) takes its input columns in it. This enum
 * is the one list of them: edge._native.FEATURE_NAMES is read from it through cffi (name without
 * EDGE_FEAT_, lowercased, by value), and tests/test_native_features.py fails on any reorder or
 * rename until the test's copy (and the shipped models) are changed with it. */
typedef enum {
    EDGE_FEAT_AGE = 0,       /* now - last access */
    EDGE_FEAT_SIZE = 1,      /* bytes */
    EDGE_FEAT_ACCESSES = 2,  /* accesses since insert, the insert included */
    EDGE_FEAT_IAT = 3,       /* EWMA of inter-access time; before a second access: now - insert */
    EDGE_FEAT_LOAD_COST = 4, /* last load cost as given at insert (seconds in the daemon) */
    EDGE_FEAT_RESIDENCY = 5, /* now - insert */
    EDGE_FEAT_PAST_ACCESSES = 6,    /* accesses in the key's earlier residencies (ghost list) */
    EDGE_FEAT_PAST_RESIDENCIES = 7, /* the key's earlier residencies (ghost list) */
    EDGE_N_FEATURES = 8
} edge_feature;

/* Weight of the newest inter-access gap in the EWMA estimate. */
#define EDGE_IAT_EWMA_ALPHA 0.25

typedef struct {
    uint64_t key;
    uint64_t size;
    uint64_t accesses;
    double inserted_at;
    double last_access;
    double iat_ewma;
    double load_cost;
    uint32_t pin_count;
    uint32_t flags;
    uint32_t past_accesses;    /* EDGE_FEAT_PAST_ACCESSES */
    uint32_t past_residencies; /* EDGE_FEAT_PAST_RESIDENCIES */
    float demand;              /* edge_index_set_demand's value; 0 from insert until set */
} edge_slot_info;

typedef struct {
    uint32_t count;        /* resident keys */
    uint32_t pinned_count; /* resident keys with pin_count > 0 */
    uint64_t bytes;        /* sum of resident sizes */
    uint64_t pinned_bytes; /* sum of sizes of pinned keys */
    uint32_t capacity;     /* slots allocated (grows by doubling) */
    uint32_t remembered;   /* keys in the ghost list */
} edge_index_totals;

/* ---- lifetime ---------------------------------------------------------------------------- */

/* Creates an index with room for initial_capacity keys before it grows (0 -> a small default).
 * seed drives edge_index_sample_unpinned only. On success *out owns a new index. */
int edge_index_init(edge_index **out, uint32_t initial_capacity, uint64_t seed);
/* Frees the index and everything it owns. NULL is accepted. */
int edge_index_free(edge_index *idx);

/* ---- single-key operations --------------------------------------------------------------- */

/* Slot of key without recording an access; EDGE_ERR_NOT_FOUND (and *slot = -1) if absent. */
int edge_index_lookup(const edge_index *idx, uint64_t key, int32_t *slot);
/* Lookup that records an access at `now` and moves the key to the MRU end of the LRU list. */
int edge_index_touch(edge_index *idx, uint64_t key, double now, int32_t *slot);
/* touch + pin in one call: the cache hit path. */
int edge_index_acquire(edge_index *idx, uint64_t key, double now, int32_t *slot);
/* acquire by slot id, for callers that already hold the slot of a resident key (the cache hit
 * path skips the hash probe this way). */
int edge_index_acquire_slot(edge_index *idx, int32_t slot, double now);
/* Inserts key at the MRU end with `pins` pins already taken. The index does not enforce a
 * budget: the caller evicts first. size must be > 0. */
int edge_index_insert(edge_index *idx, uint64_t key, uint64_t size, double load_cost, double now,
                      uint32_t pins, int32_t *slot);
/* Turns the ghost list off for good: removed keys are forgotten and EDGE_FEAT_PAST_* stay 0,
 * which saves a table probe per insert and per remove (the simulator's LRU / FIFO replay, which
 * never reads features, replays 2-3x faster). Only on an index that holds and remembers no key
 * (a new one): EDGE_ERR_INVALID otherwise, the index unchanged. */
int edge_index_forget_removed(edge_index *idx);
/* Removes key; EDGE_ERR_BUSY if it is pinned (the index is then unchanged). */
int edge_index_remove(edge_index *idx, uint64_t key);
/* Adds / drops one pin. Unpin of an unpinned slot is EDGE_ERR_BUSY. */
int edge_index_pin(edge_index *idx, int32_t slot);
int edge_index_unpin(edge_index *idx, int32_t slot);
/* Caller-defined flag bits of a slot (policies may keep a few bits of state here). */
int edge_index_set_flags(edge_index *idx, int32_t slot, uint32_t flags);
/* The router's demand estimate for a resident slot's key (the learned policy's demand input,
 * edge_learned_decision_inputs); finite and >= 0, else EDGE_ERR_INVALID. Insert sets 0: the
 * owner sets it again for a key it has an estimate for. */
int edge_index_set_demand(edge_index *idx, int32_t slot, float demand);
int edge_index_slot_info(const edge_index *idx, int32_t slot, edge_slot_info *out);
/* The pin count alone: the cheap check policies make while scanning their queues. */
int edge_index_pin_count(const edge_index *idx, int32_t slot, uint32_t *out);
int edge_index_totals_get(const edge_index *idx, edge_index_totals *out);

/* ---- many keys at once -------------------------------------------------------------------- */

/* out_slots[i] = slot of keys[i] or -1; *n_found = how many were resident. No access recorded. */
int edge_index_lookup_many(const edge_index *idx, const uint64_t *keys, uint32_t n,
                           int32_t *out_slots, uint32_t *n_found);
/* The same, recording an access at `now` for every resident key (in array order). */
int edge_index_touch_many(edge_index *idx, const uint64_t *keys, uint32_t n, double now,
                          int32_t *out_slots, uint32_t *n_found);

/* All-or-nothing touch + pin of n keys (the batch hit path: a layer's experts at once). If every
 * key is resident, each is touched in array order and pinned once per occurrence, and out_slots
 * receives the slots. Otherwise nothing changes, out_slots[i] is the slot of keys[i] or -1 and
 * EDGE_ERR_NOT_FOUND is returned. *n_found = how many keys were resident, in both cases. */
int edge_index_acquire_many(edge_index *idx, const uint64_t *keys, uint32_t n, double now,
                            int32_t *out_slots, uint32_t *n_found);
/* Pin / unpin n slots (a slot listed twice gets two pins / loses two). All or nothing: an invalid
 * slot (EDGE_ERR_INVALID), or an unpin past zero (EDGE_ERR_BUSY), leaves every pin as it was. */
int edge_index_pin_many(edge_index *idx, const int32_t *slots, uint32_t n);
int edge_index_unpin_many(edge_index *idx, const int32_t *slots, uint32_t n);
/* Records an access at `now` for n slots, in array order (each moves to the MRU end). All or
 * nothing: an invalid slot is EDGE_ERR_INVALID and nothing is touched. */
int edge_index_touch_slots(edge_index *idx, const int32_t *slots, uint32_t n, double now);

/* ---- candidates for eviction ------------------------------------------------------------- */

/* Walks from the LRU end towards the MRU end and writes up to k slots into out (caller-sized,
 * k entries); with skip_pinned != 0 pinned slots are passed over. *n_out = slots written. */
int edge_index_walk_lru(const edge_index *idx, uint32_t k, int skip_pinned, int32_t *out,
                        uint32_t *n_out);
/* The same walk from the MRU end towards the LRU end (the most recently used first). */
int edge_index_walk_mru(const edge_index *idx, uint32_t k, int skip_pinned, int32_t *out,
                        uint32_t *n_out);
/* Up to k distinct unpinned slots drawn uniformly without replacement (all of them when fewer
 * than k are unpinned), from the index's seeded generator. */
int edge_index_sample_unpinned(edge_index *idx, uint32_t k, int32_t *out, uint32_t *n_out);
/* The same draw from a generator started at `seed` instead of the index's own: the index is not
 * changed (its generator does not advance), and the same seed on the same index state gives the
 * same slots in the same order. For a choice that must be a function of the state alone (an
 * eviction policy's candidates: asking twice without an event in between gives one answer). */
int edge_index_sample_unpinned_seeded(const edge_index *idx, uint64_t seed, uint32_t k,
                                      int32_t *out, uint32_t *n_out);
/* Writes the n x EDGE_N_FEATURES float32 matrix (row-major) of the given slots into out. */
int edge_index_features(const edge_index *idx, const int32_t *slots, uint32_t n, double now,
                        float *out);

/* ---- trace replay (the simulator's fast path) -------------------------------------------- */

enum { EDGE_REPLAY_LRU = 0, EDGE_REPLAY_FIFO = 1 };

/* Replays n requests through this index under a byte budget with a built-in policy: a hit
 * touches the key (LRU moves it to the MRU end; FIFO leaves the order alone); a miss evicts from
 * the LRU end until the object fits, then inserts it. Objects larger than the budget are not
 * admitted. times may be NULL (request i happens at time i). hits_out, if not NULL, receives
 * 1 for a hit and 0 for a miss per request. The index keeps its final state; pinned keys are
 * never evicted (EDGE_ERR_BUSY if pins leave no room, with *n_done requests replayed). */
int edge_index_replay(edge_index *idx, int policy, const uint64_t *keys, const uint64_t *sizes,
                      const double *times, uint64_t n, uint64_t budget, uint8_t *hits_out,
                      uint64_t *n_hits, uint64_t *bytes_hit, uint64_t *n_evictions,
                      uint64_t *n_done);

/* ---- the learned eviction policy's inputs ------------------------------------------------- */

/* Columns of one network input row: the EDGE_N_FEATURES columns, then demand, free fraction and
 * need fraction (edge/learned/network.py INPUT_NAMES, feature schema 2). */
#define EDGE_N_LEARNED_INPUTS 11

/* The network's (n, EDGE_N_LEARNED_INPUTS) float32 input rows (row-major) from the feature
 * matrix edge_index_features writes: log1p of each feature clipped below at 0 (a NaN stays
 * NaN), the load cost in milliseconds, then the three given cache-level values. As
 * edge/learned/network.py's model_inputs computes them (up to the last bit of log1pf). */
int edge_learned_inputs(const float *features, uint32_t n, float demand, float free_fraction,
                        float need_fraction, float *out);

/* A learned policy's candidates (edge/cache/view.py PagedCacheView.candidates): up to k_tail
 * unpinned slots from the LRU end (edge_index_walk_lru), then up to k_head from the MRU end
 * (edge_index_walk_mru) not already listed, then the slots of
 * edge_index_sample_unpinned_seeded(seed, k_rand) not already listed, in draw order. out holds
 * k_tail + k_head + k_rand entries; *n_out = candidates written. */
int edge_index_candidates(const edge_index *idx, uint32_t k_tail, uint32_t k_head,
                          uint32_t k_rand, uint64_t seed, int32_t *out, uint32_t *n_out);

/* One decision's inputs in one call: edge_index_candidates into slots, then each candidate's
 * edge_index_features row at time now through edge_learned_inputs, with the candidate's own
 * demand (edge_index_set_demand), into inputs ((k_tail + k_head + k_rand) x
 * EDGE_N_LEARNED_INPUTS floats, row-major); *n_out = candidates. */
int edge_learned_decision_inputs(const edge_index *idx, uint32_t k_tail, uint32_t k_head,
                                 uint32_t k_rand, uint64_t seed, double now,
                                 float free_fraction, float need_fraction, int32_t *slots,
                                 float *inputs, uint32_t *n_out);

/* Columns of the network's output rows, Q values per action (edge/learned/network.py KEEP and
 * EVICT); a candidate's eviction preference is q[EVICT] - q[KEEP]. */
#define EDGE_Q_KEEP 0
#define EDGE_Q_EVICT 1

/* A decision's answer from the network's (n, 2) float32 Q rows (row-major): labels (one per row;
 * the candidates' slots) into out by eviction preference q[i][EDGE_Q_EVICT] - q[i][EDGE_Q_KEEP]
 * (float arithmetic), highest first, equal preferences in row order (numpy's stable argsort of
 * the negated preferences, edge/learned/serving.py). A NaN or infinite preference is
 * EDGE_ERR_INVALID (out then unspecified); n == 0 writes nothing. */
int edge_learned_rank(const float *q, uint32_t n, const int32_t *labels, int32_t *out);

/* ---- the router's feature hashing -------------------------------------------------------- */

/* Signed feature hashing of n-grams (edge/router/features.py, the "hashing" extractor). words:
 * the prompt's words joined by 0x1F (UTF-8; no word contains 0x1F); padded: " " + the words
 * joined by spaces + " " (UTF-8). Each gram - "w<n>\x1f" + n consecutive words joined by 0x1F,
 * for n in word_ngrams, and "c<n>\x1f" + n consecutive code points of padded, for n in
 * char_ngrams - is hashed with zlib's CRC-32 started at seed; out[(h & 0x7FFFFFFF) % n_buckets]
 * gains -1 if bit 31 of h is set, else +1. out (n_buckets doubles) is zeroed first; with
 * normalise != 0 the counts are then divided by their L2 norm (left at 0 when all are 0).
 * *n_grams = grams counted. An n of 0, or a NULL pointer with a non-zero length, is
 * EDGE_ERR_INVALID. */
int edge_hash_ngrams(const uint8_t *words, size_t words_len, const uint8_t *padded,
                     size_t padded_len, const uint32_t *word_ngrams, uint32_t n_word_ngrams,
                     const uint32_t *char_ngrams, uint32_t n_char_ngrams, uint32_t seed,
                     int normalise, double *out, uint32_t n_buckets, uint32_t *n_grams);

/* The shape block that ends the "hashing" extractor's vector (edge/router/features.py's
 * SHAPE_FEATURES): bias, log length in characters, log length in words, digit, upper-case and
 * punctuation fractions, newline density. */
#define EDGE_N_SHAPE_FEATURES 7

/* The whole "hashing" feature vector (dim doubles into out) of an ASCII prompt, already cut to
 * its max_chars: the words are the runs of [A-Za-z0-9_] (lower-cased with lowercase != 0), their
 * n-grams hashed as edge_hash_ngrams does (normalised) into out[0 .. dim - 7), the shape block
 * (each value times shape_weight) into the last 7, and then the whole vector divided by its L2
 * norm. Computes what the Python definition computes for such a prompt (for other text the
 * extractor hashes through edge_hash_ngrams). A byte >= 0x80, dim <= 7, an n of 0 or a NULL
 * pointer is EDGE_ERR_INVALID. Allocates 2 * len + 2 bytes of scratch for the call
 * (EDGE_ERR_NOMEM). */
int edge_hash_features_ascii(const uint8_t *text, size_t len, int lowercase,
                             const uint32_t *word_ngrams, uint32_t n_word_ngrams,
                             const uint32_t *char_ngrams, uint32_t n_char_ngrams, uint32_t seed,
                             double shape_weight, double *out, uint32_t dim,
                             uint32_t *n_grams);

/* ---- the router's decision arithmetic ----------------------------------------------------- */

/* LinUCB scores of n arms for one context x (d doubles), as edge/router/linucb.py defines them:
 * mean_a = theta_a . x + prior, bonus_a = alpha * sqrt(|x' A_a^-1 x|), score_a = mean_a + bonus_a
 * - penalty_a (penalty may be NULL: none). Arm a's row starts at rows + a * row_len: theta_a (d
 * doubles), then A_a^-1 (symmetric) either whole, row-major (packed == 0: d * d doubles) or as
 * its upper triangle row by row (packed != 0: d (d + 1) / 2). weights: scratch of d (d + 1) / 2
 * doubles (the packed layout's). *best = the first arm of the highest score; ties (n entries)
 * receives the arms whose score is at least that one's minus tie_tolerance, in index order,
 * *n_ties how many (at least 1). n or d of 0, a row_len shorter than the row, a negative or NaN tolerance,
 * or a NULL pointer (but penalty) is EDGE_ERR_INVALID. */
int edge_linucb_scores(const double *rows, uint32_t n, uint32_t row_len, uint32_t d, int packed,
                       const double *x, double *weights, double prior, double alpha,
                       const double *penalty, double *mean, double *bonus, double *score,
                       double tie_tolerance, int32_t *best, int32_t *ties, uint32_t *n_ties);

/* One LinUCB update of an arm (edge/router/linucb.py, Sherman-Morrison with the matching
 * recursive least-squares step): block holds theta (d doubles) then A^-1 (d x d, row-major);
 * with ax = A^-1 x and k = ax / (1 + x.ax): A^-1 -= ax k', theta += (reward - theta.x) k.
 * reward is already centred (minus the prior). scratch: 2 d doubles. packed_row, if not NULL,
 * receives theta and the upper triangle of the new A^-1 row by row (the packed scoring row).
 * d of 0, a NULL pointer (but packed_row), or 1 + x.ax not positive (A^-1 not positive
 * definite: nothing is changed then) is EDGE_ERR_INVALID. */
int edge_linucb_update(double *block, uint32_t d, const double *x, double reward,
                       double *scratch, double *packed_row);

/* POLAR's paging penalty of n arms (edge/router/polar.py): out_a = 0 for a resident arm
 * (resident_a != 0), else charge_a / (1 + left * share_a) + extra_a (extra may be NULL: 0).
 * left = 0 gives charge_a itself. A NULL pointer (but extra) or a left that is negative or NaN
 * is EDGE_ERR_INVALID. */
int edge_paging_penalty(uint32_t n, const double *charge, const double *share, double left,
                        const double *extra, const uint8_t *resident, double *out);

/* ---- MoE routing analysis: priority-stack depth histograms -------------------------------- */

/* Stack algorithms (Mattson et al. 1970) of edge/moe/analysis.py: a policy whose priorities
 * change only when an expert is used keeps, at every capacity C <= cap, the top C of one
 * priority stack. hist (cap + 1 counts, zeroed first) gets one count per use at its depth: the
 * use hits at every capacity above it; a first use counts at min(distinct experts used before
 * it, cap) (the first-use convention), any other use not on the stack at cap.
 *
 * edge_priority_stack_hist: uses[i] (an expert in 0..n_experts-1) has priority after[i] from
 * use i on (higher: kept longer); LFU and Belady pass their priorities.
 * edge_lookahead_stack_hist: SCH's m-token-lookahead cache over n_tokens tokens of top_k
 * experts each (tokens, row-major): a token's experts are looked up in the stack as the token
 * found it, then put on top one by one; priority = (uses in tokens t..t+m-1 not yet made) << 40
 * | the clock of the last use.
 * Both are EDGE_ERR_INVALID for a NULL pointer with uses, a cap or n_experts (or top_k, m) of 0,
 * or an expert outside 0..n_experts-1 (hist is then undefined), EDGE_ERR_NOMEM if the scratch
 * arrays cannot be had. */
int edge_priority_stack_hist(const int32_t *uses, const int64_t *after, uint64_t n,
                             uint32_t n_experts, uint32_t cap, uint64_t *hist);
int edge_lookahead_stack_hist(const int32_t *tokens, uint64_t n_tokens, uint32_t top_k,
                              uint32_t n_experts, uint32_t m, uint32_t cap, uint64_t *hist);

/* ---- checking ---------------------------------------------------------------------------- */

/* Checks every invariant (hash table <-> slots, LRU list, byte and pin totals, free list).
 * EDGE_OK or EDGE_ERR_CORRUPT. O(capacity): for tests and debugging. */
int edge_index_verify(const edge_index *idx);

#ifdef __cplusplus
}
#endif

#endif /* EDGE_H */
