/*
 * The C core's own test program, run under AddressSanitizer + UBSan (make -C native sanitize).
 *
 * Part 1, directed tests: the edge cases of every public function (invalid slot ids, NULL
 * pointers, the pin count overflow guard, n == 0 batches, the all-or-nothing batch calls,
 * status names, replay golden counts worked out by hand for LRU and FIFO).
 * Part 2, a randomised run of STEPS operations against a reference model of the semantics that
 * edge.h promises (residency, sizes, pins, flags, access counts and times, the LRU order). After
 * every step the index must pass edge_index_verify and agree with the model.
 *
 * Every function declared in edge.h is called here: tests/test_native_header_coverage.py fails
 * the suite when the header gains a function that this file does not call.
 */
#include "edge.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEYS 512       /* keys of the randomised run: [0, KEYS); keys >= KEYS are never inserted */
#define STEPS 200000
#define FULL_CHECK_EVERY 64 /* steps between checks of every field (order, pins, totals: always) */
#define MAX_SLOTS 1024 /* the randomised run never holds more than KEYS keys */
#define MAX_BATCH 64

static int failures = 0;
static long cur_step = -1; /* step of the randomised run, -1 in the directed tests */
static const char *cur_test = "";

#define EXPECT(cond, ...)                                                                        \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            fprintf(stderr, "FAIL line %d (%s, step %ld): ", __LINE__, cur_test, cur_step);     \
            fprintf(stderr, __VA_ARGS__);                                                        \
            fprintf(stderr, "\n");                                                               \
            if (++failures > 10) exit(1);                                                        \
        }                                                                                        \
    } while (0)

/* Every status is checked: EXPECT_RC names the call, the status it got and the one it wanted. */
#define EXPECT_RC(call, want)                                                                    \
    do {                                                                                         \
        int rc_ = (call);                                                                        \
        EXPECT(rc_ == (int)(want), "%s -> %d (%s), expected %d (%s)", #call, rc_,                \
               edge_status_str(rc_), (int)(want), edge_status_str((int)(want)));                 \
    } while (0)
#define CHECK_OK(call) EXPECT_RC(call, EDGE_OK)

static uint64_t rng_state = 12345;
static uint64_t next_rand(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static int close_to(double a, double b) { return fabs(a - b) <= 1e-9 * fmax(1.0, fabs(b)); }
static int closef(float a, float b) { return fabsf(a - b) <= 1e-6f * fmaxf(1.0f, fabsf(b)); }

/* ---- snapshots: "nothing changed" as seen through the public API ------------------------- */

typedef struct {
    edge_index_totals totals;
    uint32_t n;
    int32_t order[MAX_SLOTS]; /* LRU end first, pinned slots included */
    edge_slot_info info[MAX_SLOTS];
} snapshot;

static snapshot snap_before, snap_after;

static void take_snapshot(const edge_index *idx, snapshot *s) {
    CHECK_OK(edge_index_verify(idx));
    CHECK_OK(edge_index_totals_get(idx, &s->totals));
    EXPECT(s->totals.count <= MAX_SLOTS, "snapshot: %u keys", s->totals.count);
    CHECK_OK(edge_index_walk_lru(idx, MAX_SLOTS, 0, s->order, &s->n));
    EXPECT(s->n == s->totals.count, "walk saw %u of %u keys", s->n, s->totals.count);
    for (uint32_t i = 0; i < s->n; i++)
        CHECK_OK(edge_index_slot_info(idx, s->order[i], &s->info[i]));
}

static int same_info(const edge_slot_info *a, const edge_slot_info *b) {
    return a->key == b->key && a->size == b->size && a->accesses == b->accesses &&
           a->inserted_at == b->inserted_at && a->last_access == b->last_access &&
           a->iat_ewma == b->iat_ewma && a->load_cost == b->load_cost &&
           a->pin_count == b->pin_count && a->flags == b->flags &&
           a->past_accesses == b->past_accesses && a->past_residencies == b->past_residencies;
}

static int same_snapshot(const snapshot *a, const snapshot *b) {
    if (memcmp(&a->totals, &b->totals, sizeof(a->totals)) != 0 || a->n != b->n) return 0;
    for (uint32_t i = 0; i < a->n; i++) {
        if (a->order[i] != b->order[i] || !same_info(&a->info[i], &b->info[i])) return 0;
    }
    return 1;
}

#define SNAPSHOT(idx) take_snapshot((idx), &snap_before)
#define EXPECT_UNCHANGED(idx, what)                                                              \
    do {                                                                                         \
        take_snapshot((idx), &snap_after);                                                       \
        EXPECT(same_snapshot(&snap_before, &snap_after), "%s changed the index", what);          \
    } while (0)

/* Keys of the index from the LRU end to the MRU end. */
static void expect_order(const edge_index *idx, const uint64_t *want, uint32_t n,
                         const char *what) {
    int32_t walked[MAX_SLOTS];
    uint32_t got = 0;
    CHECK_OK(edge_index_walk_lru(idx, MAX_SLOTS, 0, walked, &got));
    EXPECT(got == n, "%s: %u keys in the LRU list, expected %u", what, got, n);
    for (uint32_t i = 0; i < got && i < n; i++) {
        edge_slot_info info;
        CHECK_OK(edge_index_slot_info(idx, walked[i], &info));
        EXPECT(info.key == want[i], "%s: LRU position %u holds key %llu, expected %llu", what, i,
               (unsigned long long)info.key, (unsigned long long)want[i]);
    }
}

static uint32_t pins_of(const edge_index *idx, int32_t slot) {
    uint32_t pins = 0xdeadbeefu;
    CHECK_OK(edge_index_pin_count(idx, slot, &pins));
    return pins;
}

static edge_slot_info info_of(const edge_index *idx, int32_t slot) {
    edge_slot_info info;
    memset(&info, 0, sizeof(info));
    CHECK_OK(edge_index_slot_info(idx, slot, &info));
    return info;
}

static edge_index_totals totals_of(const edge_index *idx) {
    edge_index_totals t;
    memset(&t, 0, sizeof(t));
    CHECK_OK(edge_index_totals_get(idx, &t));
    return t;
}

static edge_index *new_index(uint32_t initial_capacity, uint64_t seed) {
    edge_index *idx = NULL;
    CHECK_OK(edge_index_init(&idx, initial_capacity, seed));
    if (!idx) {
        fprintf(stderr, "edge_index_init gave no index\n");
        exit(1);
    }
    return idx;
}

static int32_t insert_key(edge_index *idx, uint64_t key, uint64_t size, double now, uint32_t pins) {
    int32_t slot = -1;
    CHECK_OK(edge_index_insert(idx, key, size, 0.25, now, pins, &slot));
    EXPECT(slot >= 0, "insert of key %llu gave slot %d", (unsigned long long)key, slot);
    return slot;
}

/* ================================ part 1: directed tests ================================== */

static void test_status_names(void) {
    cur_test = "status names";
    const int known[] = {EDGE_OK,       EDGE_ERR_NOT_FOUND, EDGE_ERR_EXISTS, EDGE_ERR_INVALID,
                         EDGE_ERR_NOMEM, EDGE_ERR_CORRUPT,  EDGE_ERR_BUSY};
    const int n_known = (int)(sizeof(known) / sizeof(known[0]));
    const int unknown[] = {-1, 7, 8, 1000, INT32_MIN, INT32_MAX};
    const char *unknown_name = edge_status_str(unknown[0]);
    EXPECT(unknown_name != NULL && unknown_name[0] != '\0', "unknown status has no name");
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        const char *name = edge_status_str(unknown[i]);
        EXPECT(name != NULL && unknown_name != NULL && strcmp(name, unknown_name) == 0,
               "unknown status %d is not named like the others", unknown[i]);
    }
    for (int i = 0; i < n_known; i++) {
        const char *name = edge_status_str(known[i]);
        EXPECT(name != NULL && name[0] != '\0', "status %d has no name", known[i]);
        if (!name || !unknown_name) continue;
        EXPECT(strcmp(name, unknown_name) != 0, "status %d is named as unknown", known[i]);
        for (int j = 0; j < i; j++) {
            const char *other = edge_status_str(known[j]);
            EXPECT(other && strcmp(name, other) != 0, "statuses %d and %d share the name '%s'",
                   known[i], known[j], name);
        }
    }
}

static void test_init_and_free(void) {
    cur_test = "init/free";
    EXPECT_RC(edge_index_init(NULL, 1, 7), EDGE_ERR_INVALID);
    edge_index *idx = NULL;
    int rc = edge_index_init(&idx, UINT32_MAX, 7); /* more slots than an index may ever have */
    EXPECT(rc == EDGE_ERR_INVALID || rc == EDGE_ERR_NOMEM, "huge init -> %d", rc);
    EXPECT(idx == NULL, "failed init left an index behind");
    if (rc == EDGE_OK) CHECK_OK(edge_index_free(idx));

    idx = new_index(0, 1); /* 0 -> a small default */
    edge_index_totals t = totals_of(idx);
    EXPECT(t.capacity > 0 && t.count == 0 && t.bytes == 0 && t.pinned_count == 0 &&
               t.pinned_bytes == 0,
           "fresh index totals");
    CHECK_OK(edge_index_verify(idx));
    CHECK_OK(edge_index_free(idx));

    idx = new_index(1000, 1);
    EXPECT(totals_of(idx).capacity >= 1000, "initial capacity %u < 1000", totals_of(idx).capacity);
    CHECK_OK(edge_index_free(idx));
    CHECK_OK(edge_index_free(NULL));
}

/* The single-key calls, the cache hit path (acquire_slot) among them, with hand-worked values. */
static void test_single_key_ops(void) {
    cur_test = "single-key ops";
    edge_index *idx = new_index(1, 3);
    int32_t s10 = insert_key(idx, 10, 100, 1.0, 0);
    int32_t s11 = insert_key(idx, 11, 200, 2.0, 0);
    int32_t s12 = -1;
    CHECK_OK(edge_index_insert(idx, 12, 300, 0.75, 3.0, 0, &s12));
    int32_t slot = 99;

    SNAPSHOT(idx);
    EXPECT_RC(edge_index_insert(idx, 10, 5, 0.0, 4.0, 0, &slot), EDGE_ERR_EXISTS);
    EXPECT_RC(edge_index_insert(idx, 13, 0, 0.0, 4.0, 0, &slot), EDGE_ERR_INVALID); /* size 0 */
    EXPECT_RC(edge_index_lookup(idx, 13, &slot), EDGE_ERR_NOT_FOUND);
    EXPECT(slot == -1, "lookup of an absent key gave slot %d", slot);
    slot = 99;
    EXPECT_RC(edge_index_touch(idx, 13, 4.0, &slot), EDGE_ERR_NOT_FOUND);
    EXPECT(slot == -1, "touch of an absent key gave slot %d", slot);
    EXPECT_RC(edge_index_acquire(idx, 13, 4.0, &slot), EDGE_ERR_NOT_FOUND);
    EXPECT_RC(edge_index_remove(idx, 13), EDGE_ERR_NOT_FOUND);
    EXPECT_UNCHANGED(idx, "calls on an absent key");
    CHECK_OK(edge_index_lookup(idx, 11, &slot));
    EXPECT(slot == s11, "lookup of key 11 gave %d, inserted at %d", slot, s11);
    EXPECT_UNCHANGED(idx, "lookup");

    /* acquire_slot = touch + pin by slot id. */
    CHECK_OK(edge_index_acquire_slot(idx, s10, 5.0));
    edge_slot_info info = info_of(idx, s10);
    EXPECT(info.pin_count == 1 && info.accesses == 2 && info.last_access == 5.0 &&
               info.iat_ewma == 4.0,
           "acquire_slot: pins %u accesses %llu last %g iat %g", info.pin_count,
           (unsigned long long)info.accesses, info.last_access, info.iat_ewma);
    expect_order(idx, (const uint64_t[]){11, 12, 10}, 3, "acquire_slot moves to MRU");
    edge_index_totals t = totals_of(idx);
    EXPECT(t.pinned_count == 1 && t.pinned_bytes == 100 && t.bytes == 600 && t.count == 3,
           "totals after acquire_slot");

    /* A second pin: counted, but the key is pinned once in the totals. */
    CHECK_OK(edge_index_pin(idx, s10));
    EXPECT(pins_of(idx, s10) == 2, "pin count after pin");
    t = totals_of(idx);
    EXPECT(t.pinned_count == 1 && t.pinned_bytes == 100, "pin of a pinned slot changed totals");
    expect_order(idx, (const uint64_t[]){11, 12, 10}, 3, "pin does not move");

    SNAPSHOT(idx);
    EXPECT_RC(edge_index_remove(idx, 10), EDGE_ERR_BUSY);
    EXPECT_UNCHANGED(idx, "remove of a pinned key");
    CHECK_OK(edge_index_unpin(idx, s10));
    CHECK_OK(edge_index_unpin(idx, s10));
    t = totals_of(idx);
    EXPECT(t.pinned_count == 0 && t.pinned_bytes == 0, "totals after the last unpin");
    SNAPSHOT(idx);
    EXPECT_RC(edge_index_unpin(idx, s10), EDGE_ERR_BUSY);
    EXPECT_UNCHANGED(idx, "unpin of an unpinned slot");

    /* Flags: stored as given, no access recorded, reset when the slot's key is replaced. */
    CHECK_OK(edge_index_set_flags(idx, s11, 0xdeadbeefu));
    info = info_of(idx, s11);
    EXPECT(info.flags == 0xdeadbeefu && info.accesses == 1 && info.last_access == 2.0,
           "set_flags: flags %#x accesses %llu", info.flags, (unsigned long long)info.accesses);
    expect_order(idx, (const uint64_t[]){11, 12, 10}, 3, "set_flags does not move");
    CHECK_OK(edge_index_remove(idx, 11));
    int32_t s11b = insert_key(idx, 11, 50, 6.0, 0);
    EXPECT(info_of(idx, s11b).flags == 0, "a new key inherited flags %#x",
           info_of(idx, s11b).flags);

    /* acquire by key, then every field of slot_info and the feature row. */
    CHECK_OK(edge_index_acquire(idx, 12, 6.0, &slot));
    EXPECT(slot == s12, "acquire gave slot %d, expected %d", slot, s12);
    info = info_of(idx, s12);
    EXPECT(info.key == 12 && info.size == 300 && info.accesses == 2 && info.inserted_at == 3.0 &&
               info.last_access == 6.0 && info.iat_ewma == 3.0 && info.load_cost == 0.75 &&
               info.pin_count == 1 && info.flags == 0,
           "slot_info of key 12");
    CHECK_OK(edge_index_touch(idx, 10, 8.0, &slot)); /* gap 3 after gap 4: 0.25*3 + 0.75*4 */
    EXPECT(slot == s10 && info_of(idx, s10).iat_ewma == 3.75, "EWMA of the inter-access time");
    CHECK_OK(edge_index_touch(idx, 10, 7.0, &slot)); /* a clock stepping back counts as gap 0 */
    EXPECT(info_of(idx, s10).iat_ewma == 0.75 * 3.75, "a negative gap poisoned the EWMA");
    float row[2 * EDGE_N_FEATURES];
    CHECK_OK(edge_index_features(idx, (const int32_t[]){s12, s11b}, 2, 10.0, row));
    /* Key 11 comes back with its one earlier residency of one access (the ghost list). */
    const float want[2 * EDGE_N_FEATURES] = {4.0f, 300.0f, 2.0f, 3.0f, 0.75f, 7.0f, 0.0f, 0.0f,
                                             4.0f, 50.0f,  1.0f, 4.0f, 0.25f, 4.0f, 1.0f, 1.0f};
    for (int i = 0; i < 2 * EDGE_N_FEATURES; i++)
        EXPECT(row[i] == want[i], "feature %d: %g, expected %g", i, row[i], want[i]);
    CHECK_OK(edge_index_verify(idx));
    CHECK_OK(edge_index_free(idx));
}

static void cycle_key(edge_index *idx, uint64_t key, double now) {
    insert_key(idx, key, 10, now, 0);
    CHECK_OK(edge_index_remove(idx, key));
}

static void expect_past(edge_index *idx, uint64_t key, uint32_t accesses, uint32_t residencies,
                        const char *what) {
    int32_t slot = insert_key(idx, key, 10, 0.0, 0);
    edge_slot_info info = info_of(idx, slot);
    EXPECT(info.past_accesses == accesses && info.past_residencies == residencies,
           "%s: key %llu came back with %u accesses over %u residencies, expected %u over %u",
           what, (unsigned long long)key, info.past_accesses, info.past_residencies, accesses,
           residencies);
}

/* The ghost list, worked by hand: a key's history over its residencies, the bound of
 * 2 * capacity removals (the oldest forgotten first), and growth keeping what is remembered. */
static void test_ghost_list(void) {
    cur_test = "ghost list";
    edge_index *idx = new_index(1, 5);
    EXPECT(totals_of(idx).capacity == 64, "capacity %u", totals_of(idx).capacity);
    int32_t slot;
    insert_key(idx, 1, 10, 0.0, 0);
    CHECK_OK(edge_index_touch(idx, 1, 1.0, &slot));
    CHECK_OK(edge_index_touch(idx, 1, 2.0, &slot)); /* 3 accesses */
    CHECK_OK(edge_index_remove(idx, 1));
    EXPECT(totals_of(idx).remembered == 1, "remembered %u", totals_of(idx).remembered);
    expect_past(idx, 1, 3, 1, "after one residency");
    EXPECT(totals_of(idx).remembered == 0, "a resident key is still remembered");
    CHECK_OK(edge_index_remove(idx, 1)); /* (3 + 1, 2) */
    for (uint64_t k = 0; k < 127; k++) cycle_key(idx, 100 + k, 3.0);
    EXPECT(totals_of(idx).remembered == 128, "remembered %u", totals_of(idx).remembered);
    expect_past(idx, 1, 4, 2, "127 removals later");
    CHECK_OK(edge_index_remove(idx, 1)); /* (5, 3) */
    for (uint64_t k = 0; k < 128; k++) cycle_key(idx, 300 + k, 4.0);
    EXPECT(totals_of(idx).remembered == 128, "remembered %u", totals_of(idx).remembered);
    expect_past(idx, 1, 0, 0, "128 removals later (forgotten)");
    expect_past(idx, 300, 1, 1, "the oldest still remembered");
    CHECK_OK(edge_index_verify(idx));

    /* Growth: 2 resident + 62 more make 64 keys; the next insert would make them more than
     * half of the 128-entry ring, so the ghost list (127 live entries, 301..427: 300 was taken
     * back) first moves to a 256-entry ring, oldest first. 256 - 127 = 129 removals later the oldest (301) is still remembered; the
     * 130th would overwrite it. */
    for (uint64_t k = 0; k < 62; k++) insert_key(idx, 1000 + k, 10, 5.0, 0);
    EXPECT(totals_of(idx).count == 64 && totals_of(idx).capacity == 64, "before growth");
    insert_key(idx, 2000, 10, 5.0, 0);
    edge_index_totals t = totals_of(idx);
    EXPECT(t.capacity == 128 && t.remembered == 127, "after growth: capacity %u remembered %u",
           t.capacity, t.remembered);
    for (uint64_t k = 0; k < 129; k++) cycle_key(idx, 3000 + k, 6.0);
    expect_past(idx, 301, 1, 1, "129 removals after growth");
    cycle_key(idx, 4000, 7.0); /* overwrites 301's dead entry: 302 is now the oldest */
    cycle_key(idx, 4001, 7.0);
    expect_past(idx, 302, 0, 0, "131 removals after growth (forgotten)");
    expect_past(idx, 303, 1, 1, "the next oldest");
    CHECK_OK(edge_index_verify(idx));
    CHECK_OK(edge_index_free(idx));

    /* The ring's size follows the keys, not the initial capacity: an index made for 4096 keys
     * forgets exactly what the one made for 1 does. */
    edge_index *small = new_index(1, 5), *large = new_index(4096, 5);
    for (uint64_t k = 0; k < 200; k++) {
        cycle_key(small, k, 1.0);
        cycle_key(large, k, 1.0);
    }
    for (uint64_t k = 0; k < 200; k += 7) {
        int32_t a = insert_key(small, k, 10, 2.0, 0), b = insert_key(large, k, 10, 2.0, 0);
        EXPECT(info_of(small, a).past_residencies == info_of(large, b).past_residencies,
               "key %llu: remembered by one index and not the other", (unsigned long long)k);
    }
    EXPECT(info_of(small, insert_key(small, 1000, 10, 3.0, 0)).past_residencies == 0 &&
               totals_of(small).remembered == totals_of(large).remembered &&
               totals_of(small).remembered == 128 - 18, /* 72..199 left; 77, 84, .., 196 back */
           "remembered %u and %u", totals_of(small).remembered, totals_of(large).remembered);
    CHECK_OK(edge_index_verify(small));
    CHECK_OK(edge_index_verify(large));
    CHECK_OK(edge_index_free(small));
    CHECK_OK(edge_index_free(large));

    /* Turned off: nothing remembered, past columns 0; refused once the index holds or
     * remembers a key. */
    edge_index *off = new_index(1, 5);
    CHECK_OK(edge_index_forget_removed(off));
    for (uint64_t k = 0; k < 300; k++) cycle_key(off, k, 1.0);
    EXPECT(totals_of(off).remembered == 0, "remembered %u with the list off",
           totals_of(off).remembered);
    expect_past(off, 5, 0, 0, "list off");
    EXPECT_RC(edge_index_forget_removed(off), EDGE_ERR_INVALID); /* holds key 5 */
    CHECK_OK(edge_index_verify(off));
    CHECK_OK(edge_index_free(off));
    edge_index *used = new_index(1, 5);
    cycle_key(used, 1, 1.0);
    SNAPSHOT(used);
    EXPECT_RC(edge_index_forget_removed(used), EDGE_ERR_INVALID); /* remembers key 1 */
    EXPECT_UNCHANGED(used, "forget_removed on an index that remembers a key");
    expect_past(used, 1, 1, 1, "still remembered");
    EXPECT_RC(edge_index_forget_removed(NULL), EDGE_ERR_INVALID);
    CHECK_OK(edge_index_free(used));
}

/* Every slot-taking function rejects a bad slot id (out of range or freed) and changes nothing;
 * a batch call does so wherever in its array the bad id sits. */
static void test_invalid_slots(void) {
    cur_test = "invalid slots";
    edge_index *idx = new_index(8, 5);
    int32_t s[7];
    for (uint64_t k = 1; k <= 6; k++) s[k] = insert_key(idx, k, 10 * k, (double)k, 0);
    int32_t slot;
    CHECK_OK(edge_index_acquire(idx, 2, 7.0, &slot));
    CHECK_OK(edge_index_pin(idx, s[2])); /* key 2: two pins */
    CHECK_OK(edge_index_remove(idx, 4));
    const int32_t freed = s[4];
    const uint32_t capacity = totals_of(idx).capacity;
    const int32_t bad[] = {-1, INT32_MIN, (int32_t)capacity, (int32_t)capacity + 1, INT32_MAX,
                           freed};
    const int32_t v0 = s[1], v1 = s[2]; /* unpinned, pinned twice */

    SNAPSHOT(idx);
    for (size_t b = 0; b < sizeof(bad) / sizeof(bad[0]); b++) {
        const int32_t x = bad[b];
        edge_slot_info info;
        uint32_t pins;
        float feats[4 * EDGE_N_FEATURES];
        EXPECT_RC(edge_index_acquire_slot(idx, x, 9.0), EDGE_ERR_INVALID);
        EXPECT_RC(edge_index_pin(idx, x), EDGE_ERR_INVALID);
        EXPECT_RC(edge_index_unpin(idx, x), EDGE_ERR_INVALID);
        EXPECT_RC(edge_index_set_flags(idx, x, 1u), EDGE_ERR_INVALID);
        EXPECT_RC(edge_index_slot_info(idx, x, &info), EDGE_ERR_INVALID);
        EXPECT_RC(edge_index_pin_count(idx, x, &pins), EDGE_ERR_INVALID);
        /* In the middle, next to a slot listed twice; then at the end; then alone. */
        const int32_t mid[] = {v0, v1, x, v0};
        const int32_t last[] = {v0, v1, x};
        /* For unpin_many only the bad id may be wrong: v1 is pinned twice, v0 not at all. */
        const int32_t unpin_mid[] = {v1, x, v1};
        const int32_t unpin_last[] = {v1, v1, x};
        EXPECT_RC(edge_index_pin_many(idx, mid, 4), EDGE_ERR_INVALID);
        EXPECT_RC(edge_index_pin_many(idx, last, 3), EDGE_ERR_INVALID);
        EXPECT_RC(edge_index_pin_many(idx, &x, 1), EDGE_ERR_INVALID);
        EXPECT_RC(edge_index_unpin_many(idx, unpin_mid, 3), EDGE_ERR_INVALID);
        EXPECT_RC(edge_index_unpin_many(idx, unpin_last, 3), EDGE_ERR_INVALID);
        EXPECT_RC(edge_index_unpin_many(idx, &x, 1), EDGE_ERR_INVALID);
        EXPECT_RC(edge_index_touch_slots(idx, mid, 4, 9.0), EDGE_ERR_INVALID);
        EXPECT_RC(edge_index_touch_slots(idx, last, 3, 9.0), EDGE_ERR_INVALID);
        EXPECT_RC(edge_index_touch_slots(idx, &x, 1, 9.0), EDGE_ERR_INVALID);
        EXPECT_RC(edge_index_features(idx, mid, 4, 9.0, feats), EDGE_ERR_INVALID);
        EXPECT_RC(edge_index_features(idx, &x, 1, 9.0, feats), EDGE_ERR_INVALID);
        EXPECT_UNCHANGED(idx, "a call with an invalid slot id");
    }
    CHECK_OK(edge_index_free(idx));
}

/* NULL where the header forbids it is EDGE_ERR_INVALID, and changes nothing. */
static void test_null_pointers(void) {
    cur_test = "NULL pointers";
    edge_index *idx = new_index(4, 5);
    const int32_t s1 = insert_key(idx, 1, 10, 1.0, 0);
    const int32_t s2 = insert_key(idx, 2, 20, 2.0, 1);
    const uint64_t keys[] = {1, 2};
    const uint64_t sizes[] = {10, 20};
    const int32_t slots[] = {s1, s2};
    int32_t out[4], slot;
    uint32_t n = 0, pins;
    float feats[2 * EDGE_N_FEATURES];
    edge_slot_info info;
    edge_index_totals t;
    uint64_t hits, bytes_hit, evictions, done;
    uint8_t hit_flags[2];

    SNAPSHOT(idx);
    EXPECT_RC(edge_index_lookup(NULL, 1, &slot), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_lookup(idx, 1, NULL), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_touch(NULL, 1, 3.0, &slot), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_touch(idx, 1, 3.0, NULL), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_acquire(NULL, 1, 3.0, &slot), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_acquire(idx, 1, 3.0, NULL), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_acquire_slot(NULL, s1, 3.0), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_insert(NULL, 3, 10, 0.0, 3.0, 0, &slot), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_insert(idx, 3, 10, 0.0, 3.0, 0, NULL), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_remove(NULL, 1), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_pin(NULL, s1), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_unpin(NULL, s2), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_set_flags(NULL, s1, 1u), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_slot_info(NULL, s1, &info), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_slot_info(idx, s1, NULL), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_pin_count(NULL, s1, &pins), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_pin_count(idx, s1, NULL), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_totals_get(NULL, &t), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_totals_get(idx, NULL), EDGE_ERR_INVALID);

    EXPECT_RC(edge_index_lookup_many(NULL, keys, 2, out, &n), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_lookup_many(idx, NULL, 2, out, &n), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_lookup_many(idx, keys, 2, NULL, &n), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_lookup_many(idx, keys, 2, out, NULL), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_touch_many(NULL, keys, 2, 3.0, out, &n), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_touch_many(idx, NULL, 2, 3.0, out, &n), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_touch_many(idx, keys, 2, 3.0, NULL, &n), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_touch_many(idx, keys, 2, 3.0, out, NULL), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_acquire_many(NULL, keys, 2, 3.0, out, &n), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_acquire_many(idx, NULL, 2, 3.0, out, &n), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_acquire_many(idx, keys, 2, 3.0, NULL, &n), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_acquire_many(idx, keys, 2, 3.0, out, NULL), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_pin_many(NULL, slots, 2), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_pin_many(idx, NULL, 2), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_unpin_many(NULL, slots + 1, 1), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_unpin_many(idx, NULL, 1), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_touch_slots(NULL, slots, 2, 3.0), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_touch_slots(idx, NULL, 2, 3.0), EDGE_ERR_INVALID);

    EXPECT_RC(edge_index_walk_lru(NULL, 2, 0, out, &n), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_walk_lru(idx, 2, 0, NULL, &n), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_walk_lru(idx, 2, 1, out, NULL), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_sample_unpinned(NULL, 2, out, &n), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_sample_unpinned(idx, 2, NULL, &n), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_sample_unpinned(idx, 2, out, NULL), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_sample_unpinned_seeded(NULL, 1, 2, out, &n), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_sample_unpinned_seeded(idx, 1, 2, NULL, &n), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_sample_unpinned_seeded(idx, 1, 2, out, NULL), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_features(NULL, slots, 2, 3.0, feats), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_features(idx, NULL, 2, 3.0, feats), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_features(idx, slots, 2, 3.0, NULL), EDGE_ERR_INVALID);

    /* replay: times and hits_out may be NULL, nothing else may. */
    EXPECT_RC(edge_index_replay(NULL, EDGE_REPLAY_LRU, keys, sizes, NULL, 2, 100, hit_flags,
                                &hits, &bytes_hit, &evictions, &done),
              EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_replay(idx, EDGE_REPLAY_LRU, NULL, sizes, NULL, 2, 100, hit_flags, &hits,
                                &bytes_hit, &evictions, &done),
              EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_replay(idx, EDGE_REPLAY_LRU, keys, NULL, NULL, 2, 100, hit_flags, &hits,
                                &bytes_hit, &evictions, &done),
              EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_replay(idx, EDGE_REPLAY_LRU, keys, sizes, NULL, 2, 100, hit_flags, NULL,
                                &bytes_hit, &evictions, &done),
              EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_replay(idx, EDGE_REPLAY_LRU, keys, sizes, NULL, 2, 100, hit_flags, &hits,
                                NULL, &evictions, &done),
              EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_replay(idx, EDGE_REPLAY_LRU, keys, sizes, NULL, 2, 100, hit_flags, &hits,
                                &bytes_hit, NULL, &done),
              EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_replay(idx, EDGE_REPLAY_LRU, keys, sizes, NULL, 2, 100, hit_flags, &hits,
                                &bytes_hit, &evictions, NULL),
              EDGE_ERR_INVALID);
    /* ... nor may the policy be one the core does not know. */
    EXPECT_RC(edge_index_replay(idx, 2, keys, sizes, NULL, 2, 100, hit_flags, &hits, &bytes_hit,
                                &evictions, &done),
              EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_replay(idx, -1, keys, sizes, NULL, 2, 100, hit_flags, &hits, &bytes_hit,
                                &evictions, &done),
              EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_verify(NULL), EDGE_ERR_INVALID);
    EXPECT_UNCHANGED(idx, "a call with a NULL pointer");
    CHECK_OK(edge_index_free(idx));
}

/* Pin counts stop at UINT32_MAX: the pin that would wrap is refused and changes nothing. */
static void test_pin_count_overflow(void) {
    cur_test = "pin count overflow";
    edge_index *idx = new_index(4, 5);
    const int32_t a = insert_key(idx, 1, 10, 1.0, UINT32_MAX - 1);
    const int32_t b = insert_key(idx, 2, 20, 2.0, 0);
    EXPECT(pins_of(idx, a) == UINT32_MAX - 1, "insert with UINT32_MAX - 1 pins");
    edge_index_totals t = totals_of(idx);
    EXPECT(t.pinned_count == 1 && t.pinned_bytes == 10, "totals after a pinned insert");
    CHECK_OK(edge_index_pin(idx, a));
    EXPECT(pins_of(idx, a) == UINT32_MAX, "pin to UINT32_MAX");

    uint32_t n_found = 0;
    int32_t out[4];
    SNAPSHOT(idx);
    EXPECT_RC(edge_index_pin(idx, a), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_acquire_slot(idx, a, 5.0), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_pin_many(idx, &a, 1), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_pin_many(idx, (const int32_t[]){b, a}, 2), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_acquire_many(idx, (const uint64_t[]){2, 1}, 2, 5.0, out, &n_found),
              EDGE_ERR_INVALID);
    EXPECT(n_found == 2, "acquire_many at the pin limit found %u of 2", n_found);
    EXPECT_UNCHANGED(idx, "a pin past UINT32_MAX");

    /* acquire by key refuses too, before recording the access: nothing changes. */
    int32_t slot = -1;
    SNAPSHOT(idx);
    EXPECT_RC(edge_index_acquire(idx, 1, 6.0, &slot), EDGE_ERR_INVALID);
    EXPECT_UNCHANGED(idx, "an acquire past UINT32_MAX");
    EXPECT(pins_of(idx, a) == UINT32_MAX, "acquire past UINT32_MAX wrapped the pin count");
    t = totals_of(idx);
    EXPECT(t.pinned_count == 1 && t.pinned_bytes == 10, "totals after a refused acquire");

    /* Just below the limit every path may take the last pin(s). */
    CHECK_OK(edge_index_unpin(idx, a));
    CHECK_OK(edge_index_acquire_slot(idx, a, 7.0));
    EXPECT(pins_of(idx, a) == UINT32_MAX, "acquire_slot to UINT32_MAX");
    CHECK_OK(edge_index_unpin(idx, a));
    SNAPSHOT(idx);
    EXPECT_RC(edge_index_pin_many(idx, (const int32_t[]){a, a}, 2), EDGE_ERR_INVALID);
    EXPECT_UNCHANGED(idx, "pin_many of two pins with room for one");
    CHECK_OK(edge_index_pin_many(idx, &a, 1));
    EXPECT(pins_of(idx, a) == UINT32_MAX, "pin_many to UINT32_MAX");
    CHECK_OK(edge_index_unpin_many(idx, (const int32_t[]){a, a}, 2));
    CHECK_OK(edge_index_acquire_many(idx, (const uint64_t[]){1, 1}, 2, 8.0, out, &n_found));
    EXPECT(pins_of(idx, a) == UINT32_MAX && out[0] == a && out[1] == a && n_found == 2,
           "acquire_many to UINT32_MAX");
    t = totals_of(idx);
    EXPECT(t.pinned_count == 1 && t.pinned_bytes == 10, "totals at the pin limit");
    CHECK_OK(edge_index_verify(idx));
    CHECK_OK(edge_index_free(idx)); /* freeing an index with pinned keys is fine */
}

/* n == 0 (k == 0) is a no-op for every batch call, with or without arrays behind it. */
static void test_empty_batches(void) {
    cur_test = "n = 0";
    edge_index *idx = new_index(4, 5);
    const int32_t s1 = insert_key(idx, 1, 10, 1.0, 0);
    insert_key(idx, 2, 20, 2.0, 1);
    const uint64_t keys[] = {1, 99};
    const uint64_t sizes[] = {10, 10};
    const double times[] = {5.0, 6.0};
    int32_t slots[2] = {s1, -1};
    float feats[EDGE_N_FEATURES];
    uint8_t hit_flags[2] = {7, 7};
    uint64_t hits = 9, bytes_hit = 9, evictions = 9, done = 9;
    uint32_t n = 99;

    SNAPSHOT(idx);
    CHECK_OK(edge_index_lookup_many(idx, keys, 0, slots, &n));
    EXPECT(n == 0 && slots[1] == -1 && slots[0] == s1, "lookup_many n=0");
    n = 99;
    CHECK_OK(edge_index_lookup_many(idx, NULL, 0, NULL, &n));
    EXPECT(n == 0, "lookup_many n=0 without arrays");
    n = 99;
    CHECK_OK(edge_index_touch_many(idx, keys, 0, 5.0, slots, &n));
    EXPECT(n == 0, "touch_many n=0");
    n = 99;
    CHECK_OK(edge_index_touch_many(idx, NULL, 0, 5.0, NULL, &n));
    EXPECT(n == 0, "touch_many n=0 without arrays");
    n = 99;
    CHECK_OK(edge_index_acquire_many(idx, keys, 0, 5.0, slots, &n));
    EXPECT(n == 0, "acquire_many n=0");
    n = 99;
    CHECK_OK(edge_index_acquire_many(idx, NULL, 0, 5.0, NULL, &n));
    EXPECT(n == 0, "acquire_many n=0 without arrays");
    CHECK_OK(edge_index_pin_many(idx, slots, 0));
    CHECK_OK(edge_index_pin_many(idx, NULL, 0));
    CHECK_OK(edge_index_unpin_many(idx, slots, 0));
    CHECK_OK(edge_index_unpin_many(idx, NULL, 0));
    CHECK_OK(edge_index_touch_slots(idx, slots, 0, 5.0));
    CHECK_OK(edge_index_touch_slots(idx, NULL, 0, 5.0));
    CHECK_OK(edge_index_features(idx, slots, 0, 5.0, feats));
    CHECK_OK(edge_index_features(idx, NULL, 0, 5.0, NULL));
    for (int skip = 0; skip <= 1; skip++) {
        n = 99;
        CHECK_OK(edge_index_walk_lru(idx, 0, skip, slots, &n));
        EXPECT(n == 0, "walk_lru k=0");
        n = 99;
        CHECK_OK(edge_index_walk_lru(idx, 0, skip, NULL, &n));
        EXPECT(n == 0, "walk_lru k=0 without an array");
    }
    n = 99;
    CHECK_OK(edge_index_sample_unpinned(idx, 0, slots, &n));
    EXPECT(n == 0, "sample_unpinned k=0");
    n = 99;
    CHECK_OK(edge_index_sample_unpinned(idx, 0, NULL, &n));
    EXPECT(n == 0, "sample_unpinned k=0 without an array");
    n = 7;
    CHECK_OK(edge_index_sample_unpinned_seeded(idx, 3, 0, NULL, &n));
    EXPECT(n == 0, "sample_unpinned_seeded k=0 without an array");
    CHECK_OK(edge_index_replay(idx, EDGE_REPLAY_LRU, keys, sizes, times, 0, 1, hit_flags, &hits,
                               &bytes_hit, &evictions, &done));
    EXPECT(hits == 0 && bytes_hit == 0 && evictions == 0 && done == 0 && hit_flags[0] == 7,
           "replay n=0");
    hits = bytes_hit = evictions = done = 9;
    CHECK_OK(edge_index_replay(idx, EDGE_REPLAY_FIFO, NULL, NULL, NULL, 0, 1, NULL, &hits,
                               &bytes_hit, &evictions, &done));
    EXPECT(hits == 0 && bytes_hit == 0 && evictions == 0 && done == 0,
           "replay n=0 without arrays");
    EXPECT_UNCHANGED(idx, "a batch call with n = 0");
    CHECK_OK(edge_index_free(idx));
}

/* The all-or-nothing batch calls on a five-key index, with the LRU order worked out by hand. */
static void test_batch_semantics(void) {
    cur_test = "batch semantics";
    edge_index *idx = new_index(8, 5);
    int32_t s[6];
    for (uint64_t k = 1; k <= 5; k++) s[k] = insert_key(idx, k, k, (double)k, 0);
    int32_t out[4] = {0, 0, 0, 0};
    uint32_t n_found = 0;

    /* touch 4, 2, 4 in that order: 1 2 3 4 5 -> 1 3 5 2 4; pins 4:2, 2:1. */
    CHECK_OK(edge_index_acquire_many(idx, (const uint64_t[]){4, 2, 4}, 3, 10.0, out, &n_found));
    EXPECT(n_found == 3 && out[0] == s[4] && out[1] == s[2] && out[2] == s[4],
           "acquire_many slots");
    expect_order(idx, (const uint64_t[]){1, 3, 5, 2, 4}, 5, "acquire_many");
    EXPECT(pins_of(idx, s[4]) == 2 && pins_of(idx, s[2]) == 1, "acquire_many pins");
    EXPECT(info_of(idx, s[4]).accesses == 3 && info_of(idx, s[2]).accesses == 2 &&
               info_of(idx, s[4]).last_access == 10.0,
           "acquire_many accesses");
    edge_index_totals t = totals_of(idx);
    EXPECT(t.pinned_count == 2 && t.pinned_bytes == 6, "acquire_many totals");

    /* One key absent: nothing changes, but the slots and the count come back. */
    SNAPSHOT(idx);
    EXPECT_RC(edge_index_acquire_many(idx, (const uint64_t[]){1, 99, 3}, 3, 11.0, out, &n_found),
              EDGE_ERR_NOT_FOUND);
    EXPECT(n_found == 2 && out[0] == s[1] && out[1] == -1 && out[2] == s[3],
           "acquire_many with an absent key: found %u, slots %d %d %d", n_found, out[0], out[1],
           out[2]);
    EXPECT_RC(edge_index_acquire_many(idx, (const uint64_t[]){99}, 1, 11.0, out, &n_found),
              EDGE_ERR_NOT_FOUND);
    EXPECT(n_found == 0 && out[0] == -1, "acquire_many of an absent key alone");
    EXPECT_UNCHANGED(idx, "acquire_many with an absent key");

    /* pin_many: a slot listed twice gets two pins; no access is recorded, nothing moves. */
    CHECK_OK(edge_index_pin_many(idx, (const int32_t[]){s[1], s[1], s[5]}, 3));
    EXPECT(pins_of(idx, s[1]) == 2 && pins_of(idx, s[5]) == 1, "pin_many pins");
    EXPECT(info_of(idx, s[1]).accesses == 1, "pin_many recorded an access");
    expect_order(idx, (const uint64_t[]){1, 3, 5, 2, 4}, 5, "pin_many");
    t = totals_of(idx);
    EXPECT(t.pinned_count == 4 && t.pinned_bytes == 12, "pin_many totals");

    /* unpin_many past zero: BUSY, every pin restored (5 drops to 0 and comes back). */
    SNAPSHOT(idx);
    EXPECT_RC(edge_index_unpin_many(idx, (const int32_t[]){s[1], s[1], s[1]}, 3), EDGE_ERR_BUSY);
    EXPECT_RC(edge_index_unpin_many(idx, (const int32_t[]){s[5], s[1], s[5]}, 3), EDGE_ERR_BUSY);
    EXPECT_RC(edge_index_unpin_many(idx, (const int32_t[]){s[4], s[2], s[4], s[3]}, 4),
              EDGE_ERR_BUSY);
    EXPECT_UNCHANGED(idx, "unpin_many past zero");
    CHECK_OK(edge_index_unpin_many(idx, (const int32_t[]){s[4], s[1], s[4], s[1], s[2]}, 5));
    EXPECT(pins_of(idx, s[1]) == 0 && pins_of(idx, s[2]) == 0 && pins_of(idx, s[4]) == 0 &&
               pins_of(idx, s[5]) == 1,
           "unpin_many pins");
    t = totals_of(idx);
    EXPECT(t.pinned_count == 1 && t.pinned_bytes == 5, "unpin_many totals");
    expect_order(idx, (const uint64_t[]){1, 3, 5, 2, 4}, 5, "unpin_many");

    /* touch_slots 3, 1, 3: 1 3 5 2 4 -> 5 2 4 1 3; key 3 (inserted at 3): gaps 17 then 0. */
    CHECK_OK(edge_index_touch_slots(idx, (const int32_t[]){s[3], s[1], s[3]}, 3, 20.0));
    expect_order(idx, (const uint64_t[]){5, 2, 4, 1, 3}, 5, "touch_slots");
    edge_slot_info info = info_of(idx, s[3]);
    EXPECT(info.accesses == 3 && info.last_access == 20.0 && info.iat_ewma == 0.75 * 17.0 &&
               info.pin_count == 0,
           "touch_slots: accesses %llu iat %g", (unsigned long long)info.accesses, info.iat_ewma);
    EXPECT(info_of(idx, s[1]).accesses == 2 && pins_of(idx, s[5]) == 1, "touch_slots pins");

    /* Walks and samples see the pin on key 5. */
    int32_t walked[8];
    uint32_t n = 0;
    CHECK_OK(edge_index_walk_lru(idx, 8, 1, walked, &n));
    EXPECT(n == 4 && walked[0] == s[2] && walked[3] == s[3], "walk skipping pinned");
    CHECK_OK(edge_index_walk_lru(idx, 2, 0, walked, &n));
    EXPECT(n == 2 && walked[0] == s[5] && walked[1] == s[2], "walk of two");
    CHECK_OK(edge_index_sample_unpinned(idx, 8, walked, &n));
    EXPECT(n == 4, "sample of more than the unpinned keys returned %u", n);
    for (uint32_t i = 0; i < n; i++) EXPECT(walked[i] != s[5], "sample returned a pinned slot");
    CHECK_OK(edge_index_verify(idx));
    CHECK_OK(edge_index_free(idx));
}

/* sample_unpinned gives min(k, unpinned) distinct unpinned slots, whether few or most keys are
 * pinned (the core may sample differently in each case), reaches every unpinned key, and
 * repeats itself for the same seed. */
static void sample_case(uint32_t n_keys, uint32_t n_pinned, uint64_t seed, int32_t *first) {
    edge_index *idx = new_index(n_keys, seed);
    int32_t slot_of[32], out[32];
    int seen[32] = {0};
    for (uint32_t k = 0; k < n_keys; k++)
        slot_of[k] = insert_key(idx, k, 1, 0.0, k < n_pinned ? 1 : 0);
    const uint32_t unpinned = n_keys - n_pinned;
    for (int round = 0; round < 200; round++) {
        const uint32_t want = 1 + (uint32_t)round % (unpinned + 2);
        uint32_t n = 99;
        CHECK_OK(edge_index_sample_unpinned(idx, want, out, &n));
        EXPECT(n == (want < unpinned ? want : unpinned), "sample of %u with %u of %u pinned: %u",
               want, n_pinned, n_keys, n);
        for (uint32_t i = 0; i < n && i < 32; i++) {
            uint32_t key = 0;
            while (key < n_keys && slot_of[key] != out[i]) key++;
            EXPECT(key >= n_pinned && key < n_keys, "sample gave slot %d (pinned or no key)",
                   out[i]);
            if (key < n_keys) seen[key] = 1;
            for (uint32_t j = 0; j < i; j++) EXPECT(out[i] != out[j], "repeat in sample");
            if (round == 0) first[i] = out[i];
        }
    }
    for (uint32_t k = n_pinned; k < n_keys; k++)
        EXPECT(seen[k], "key %u never sampled (%u of %u pinned)", k, n_pinned, n_keys);
    CHECK_OK(edge_index_verify(idx));
    CHECK_OK(edge_index_free(idx));
}

static void test_sampling(void) {
    cur_test = "sampling";
    int32_t a[32], b[32];
    sample_case(20, 16, 1, a); /* mostly pinned */
    sample_case(20, 2, 1, a);  /* mostly unpinned */
    sample_case(20, 0, 1, a);
    sample_case(20, 20, 1, a); /* nothing to sample */
    sample_case(30, 5, 42, a);
    sample_case(30, 5, 42, b);
    EXPECT(a[0] == b[0], "the same seed sampled differently");
}

/* sample_unpinned_seeded makes sample_unpinned's draw from a generator of its own: the same
 * seed gives the same slots, the index (its generator included) stays as it was, and a seed
 * equal to the index's gives the index's own first draw. Pinned counts from none to all cover
 * both ways of sampling. */
static void test_seeded_sampling(void) {
    cur_test = "seeded sampling";
    enum { N = 20 };
    for (uint32_t n_pinned = 0; n_pinned <= N; n_pinned += 4) {
        edge_index *idx = new_index(N, 7), *twin = new_index(N, 7), *fresh = new_index(N, 7);
        for (uint32_t k = 0; k < N; k++) {
            const uint32_t pins = k < n_pinned ? 1 : 0;
            insert_key(idx, k, 1, 0.0, pins);
            insert_key(twin, k, 1, 0.0, pins);
            insert_key(fresh, k, 1, 0.0, pins);
        }
        const uint32_t unpinned = N - n_pinned;
        int32_t a[N + 4], b[N + 4], c[N + 4];
        uint32_t na = 0, nb = 0, nc = 0;

        CHECK_OK(edge_index_sample_unpinned_seeded(idx, 7, 3, a, &na));
        CHECK_OK(edge_index_sample_unpinned(fresh, 3, b, &nb));
        EXPECT(na == nb && memcmp(a, b, na * sizeof(a[0])) == 0,
               "seed 7 differs from the first draw of an index seeded with 7 (%u pinned)",
               n_pinned);

        int differs = 0;
        for (uint32_t want = 0; want <= N + 2; want++) {
            SNAPSHOT(idx);
            CHECK_OK(edge_index_sample_unpinned_seeded(idx, 100 + want, want, a, &na));
            CHECK_OK(edge_index_sample_unpinned_seeded(idx, 100 + want, want, b, &nb));
            EXPECT_UNCHANGED(idx, "sample_unpinned_seeded");
            EXPECT(na == (want < unpinned ? want : unpinned), "sample of %u with %u pinned: %u",
                   want, n_pinned, na);
            EXPECT(na == nb && memcmp(a, b, na * sizeof(a[0])) == 0,
                   "the same seed sampled differently (%u of %u pinned)", want, n_pinned);
            for (uint32_t i = 0; i < na; i++) {
                EXPECT(pins_of(idx, a[i]) == 0, "seeded sample gave pinned slot %d", a[i]);
                for (uint32_t j = 0; j < i; j++) EXPECT(a[i] != a[j], "repeat in seeded sample");
            }
            CHECK_OK(edge_index_sample_unpinned_seeded(idx, 200 + want, want, c, &nc));
            differs |= nc != na || memcmp(a, c, na * sizeof(a[0])) != 0;
            /* The index's own generator did not move: its next draw is its twin's. */
            CHECK_OK(edge_index_sample_unpinned(idx, 3, b, &nb));
            CHECK_OK(edge_index_sample_unpinned(twin, 3, c, &nc));
            EXPECT(nb == nc && memcmp(b, c, nb * sizeof(b[0])) == 0,
                   "a seeded sample moved the index's generator (%u pinned)", n_pinned);
        }
        if (unpinned > 3 && unpinned < N) EXPECT(differs, "every seed drew the same sample");
        CHECK_OK(edge_index_verify(idx));
        CHECK_OK(edge_index_free(idx));
        CHECK_OK(edge_index_free(twin));
        CHECK_OK(edge_index_free(fresh));
    }
}

/* Every slot-taking call on every slot of an index filled to exactly its capacity (the last
 * slot is where an off-by-one write lands), then again after the insert that makes it grow. */
static void check_every_slot(edge_index *idx, uint32_t n_keys, double now) {
    int32_t *slots = malloc(n_keys * sizeof(int32_t)), *out = malloc(n_keys * sizeof(int32_t));
    uint64_t *keys = malloc(n_keys * sizeof(uint64_t));
    float *feats = malloc((size_t)n_keys * EDGE_N_FEATURES * sizeof(float));
    if (!slots || !out || !keys || !feats) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    uint32_t n = 0;
    const edge_index_totals before = totals_of(idx);
    EXPECT(before.count == n_keys, "%u keys, expected %u", before.count, n_keys);
    for (uint32_t k = 0; k < n_keys; k++) keys[k] = 1000 + k;
    CHECK_OK(edge_index_lookup_many(idx, keys, (uint32_t)n_keys, slots, &n));
    EXPECT(n == n_keys, "lookup_many found %u of %u", n, n_keys);
    for (uint32_t k = 0; k < n_keys; k++) {
        const int32_t s = slots[k];
        EXPECT(s >= 0 && (uint32_t)s < before.capacity, "slot %d", s);
        CHECK_OK(edge_index_acquire_slot(idx, s, now));
        CHECK_OK(edge_index_pin(idx, s));
        EXPECT(pins_of(idx, s) == 2, "pins of slot %d", s);
        CHECK_OK(edge_index_set_flags(idx, s, (uint32_t)s ^ 0x5a5a5a5au));
        edge_slot_info info = info_of(idx, s);
        EXPECT(info.key == keys[k] && info.flags == ((uint32_t)s ^ 0x5a5a5a5au) &&
                   info.pin_count == 2 && info.last_access == now,
               "slot_info of slot %d", s);
        CHECK_OK(edge_index_unpin(idx, s));
        CHECK_OK(edge_index_unpin(idx, s));
    }
    const uint32_t m = n_keys;
    CHECK_OK(edge_index_pin_many(idx, slots, m));
    EXPECT(totals_of(idx).pinned_count == m, "pin_many of every slot");
    CHECK_OK(edge_index_unpin_many(idx, slots, m));
    CHECK_OK(edge_index_touch_slots(idx, slots, m, now + 1.0));
    CHECK_OK(edge_index_features(idx, slots, m, now + 2.0, feats));
    CHECK_OK(edge_index_acquire_many(idx, keys, m, now + 3.0, out, &n));
    EXPECT(n == m && memcmp(out, slots, m * sizeof(out[0])) == 0, "acquire_many of every key");
    CHECK_OK(edge_index_unpin_many(idx, out, m));
    CHECK_OK(edge_index_touch_many(idx, keys, m, now + 4.0, out, &n));
    EXPECT(n == m, "touch_many of every key");
    CHECK_OK(edge_index_walk_lru(idx, m, 1, out, &n));
    EXPECT(n == m, "walk of every key");
    CHECK_OK(edge_index_sample_unpinned(idx, m, out, &n));
    EXPECT(n == m, "sample of every key");
    CHECK_OK(edge_index_sample_unpinned_seeded(idx, 3, m, out, &n));
    EXPECT(n == m, "seeded sample of every key");
    const edge_index_totals after = totals_of(idx);
    EXPECT(after.count == m && after.pinned_count == 0 && after.pinned_bytes == 0 &&
               after.bytes == before.bytes && after.capacity == before.capacity,
           "totals after every slot");
    CHECK_OK(edge_index_verify(idx));
    free(slots);
    free(out);
    free(keys);
    free(feats);
}

static void test_full_index(void) {
    cur_test = "full index";
    edge_index *idx = new_index(64, 5);
    const uint32_t capacity = totals_of(idx).capacity;
    EXPECT(capacity >= 64 && capacity <= 4096, "init(64) gave capacity %u", capacity);
    if (capacity < 64 || capacity > 4096) {
        CHECK_OK(edge_index_free(idx));
        return;
    }
    for (uint64_t k = 0; k < capacity; k++) insert_key(idx, 1000 + k, 1 + k, (double)k, 0);
    EXPECT(totals_of(idx).capacity == capacity, "the index grew before it was full");
    check_every_slot(idx, capacity, 100.0);
    insert_key(idx, 1000 + capacity, 1, 200.0, 0); /* grows: capacity doubles */
    EXPECT(totals_of(idx).capacity == 2 * capacity, "growth to %u", totals_of(idx).capacity);
    check_every_slot(idx, capacity + 1, 300.0);
    for (uint64_t k = capacity + 1; k < 2 * capacity; k++)
        insert_key(idx, 1000 + k, 1 + k, 400.0, 0);
    check_every_slot(idx, 2 * capacity, 500.0);
    CHECK_OK(edge_index_free(idx));
}

/* Replays `keys` on a fresh index and compares with counts worked out by hand. */
static void replay_case(const char *what, int policy, const uint64_t *keys, const uint64_t *sizes,
                        const double *times, uint64_t n, uint64_t budget, const uint8_t *want_hits,
                        uint64_t want_bytes_hit, uint64_t want_evictions,
                        const uint64_t *want_order, uint32_t want_count) {
    edge_index *idx = new_index(1, 5);
    uint8_t hit_flags[32];
    uint64_t hits = 0, bytes_hit = 0, evictions = 0, done = 0, want_n_hits = 0;
    CHECK_OK(edge_index_replay(idx, policy, keys, sizes, times, n, budget, hit_flags, &hits,
                               &bytes_hit, &evictions, &done));
    for (uint64_t i = 0; i < n; i++) {
        want_n_hits += want_hits[i];
        EXPECT(hit_flags[i] == want_hits[i], "%s: request %llu hit=%u, expected %u", what,
               (unsigned long long)i, hit_flags[i], want_hits[i]);
    }
    EXPECT(hits == want_n_hits && bytes_hit == want_bytes_hit && evictions == want_evictions &&
               done == n,
           "%s: hits %llu bytes_hit %llu evictions %llu done %llu", what,
           (unsigned long long)hits, (unsigned long long)bytes_hit,
           (unsigned long long)evictions, (unsigned long long)done);
    expect_order(idx, want_order, want_count, what);
    EXPECT(totals_of(idx).bytes <= budget, "%s: over budget", what);
    CHECK_OK(edge_index_verify(idx));
    /* The same replay without hits_out or times counts the same. */
    edge_index *again = new_index(1, 5);
    uint64_t hits2 = 0, bytes_hit2 = 0, evictions2 = 0, done2 = 0;
    CHECK_OK(edge_index_replay(again, policy, keys, sizes, NULL, n, budget, NULL, &hits2,
                               &bytes_hit2, &evictions2, &done2));
    EXPECT(hits2 == hits && bytes_hit2 == bytes_hit && evictions2 == evictions && done2 == n,
           "%s: replay without hits_out / times differs", what);
    CHECK_OK(edge_index_free(again));
    CHECK_OK(edge_index_free(idx));
}

static void test_replay_golden(void) {
    cur_test = "replay golden";
    /* Unit sizes, budget 3, A..E = 1..5: A B C A D B E A B C A.
     * LRU:  [A B C] A hit -> [B C A]; D evicts B; B evicts C; E evicts A; A evicts D -> [B E A];
     *       B hit -> [E A B]; C evicts E -> [A B C]; A hit -> [B C A]. 3 hits, 5 evictions.
     * FIFO: [A B C] A hit; D evicts A; B hit; E evicts B; A evicts C; B evicts D; C evicts E
     *       -> [A B C]; A hit. 3 hits, 5 evictions, other requests hit. */
    const uint64_t keys[] = {1, 2, 3, 1, 4, 2, 5, 1, 2, 3, 1};
    const uint64_t ones[] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    const uint8_t lru_hits[] = {0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 1};
    const uint8_t fifo_hits[] = {0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 1};
    replay_case("LRU unit sizes", EDGE_REPLAY_LRU, keys, ones, NULL, 11, 3, lru_hits, 3, 5,
                (const uint64_t[]){2, 3, 1}, 3);
    replay_case("FIFO unit sizes", EDGE_REPLAY_FIFO, keys, ones, NULL, 11, 3, fifo_hits, 3, 5,
                (const uint64_t[]){1, 2, 3}, 3);

    /* Mixed sizes, budget 10, an object larger than the budget (key 9, never admitted):
     * A4 B3 C3 [10 bytes] A hit; D5 evicts B then C -> [A D] 9; B3 evicts A -> [D B] 8;
     * X20 skipped; A4 evicts D -> [B A] 7; C3 -> [B A C] 10. The same under FIFO, where the
     * hit does not move A: D evicts A and B -> [C D]; B evicts C; A evicts D -> [B A C]. */
    const uint64_t mkeys[] = {1, 2, 3, 1, 4, 2, 9, 1, 3};
    const uint64_t msizes[] = {4, 3, 3, 4, 5, 3, 20, 4, 3};
    const double mtimes[] = {0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5};
    const uint8_t mhits[] = {0, 0, 0, 1, 0, 0, 0, 0, 0};
    replay_case("LRU mixed sizes", EDGE_REPLAY_LRU, mkeys, msizes, mtimes, 9, 10, mhits, 4, 4,
                (const uint64_t[]){2, 1, 3}, 3);
    replay_case("FIFO mixed sizes", EDGE_REPLAY_FIFO, mkeys, msizes, mtimes, 9, 10, mhits, 4, 4,
                (const uint64_t[]){2, 1, 3}, 3);

    /* The index keeps its state between replays; a hit records the access at times[i]. */
    cur_test = "replay state";
    edge_index *idx = new_index(1, 5);
    uint64_t hits, bytes_hit, evictions, done;
    const int32_t p = insert_key(idx, 100, 3, 0.0, 1); /* pinned, fills the budget of 3 */
    SNAPSHOT(idx);
    EXPECT_RC(edge_index_replay(idx, EDGE_REPLAY_LRU, (const uint64_t[]){1, 100},
                                (const uint64_t[]){1, 3}, NULL, 2, 3, NULL, &hits, &bytes_hit,
                                &evictions, &done),
              EDGE_ERR_BUSY);
    EXPECT(done == 0 && hits == 0 && evictions == 0, "replay blocked by a pin: done %llu",
           (unsigned long long)done);
    EXPECT_UNCHANGED(idx, "a replay blocked by a pinned key");
    CHECK_OK(edge_index_replay(idx, EDGE_REPLAY_FIFO, (const uint64_t[]){100},
                               (const uint64_t[]){7}, (const double[]){9.0}, 1, 3, NULL, &hits,
                               &bytes_hit, &evictions, &done));
    EXPECT(hits == 1 && bytes_hit == 7 && done == 1, "replay hit on a pinned key");
    EXPECT(info_of(idx, p).last_access == 9.0 && info_of(idx, p).accesses == 2 &&
               pins_of(idx, p) == 1,
           "replay hit recorded the access");
    /* A pinned key at the LRU end is passed over: budget 4, [P(3, pinned)] + Q(1) fits, then
     * R(1) evicts Q, not P. */
    CHECK_OK(edge_index_replay(idx, EDGE_REPLAY_LRU, (const uint64_t[]){2, 3},
                               (const uint64_t[]){1, 1}, NULL, 2, 4, NULL, &hits, &bytes_hit,
                               &evictions, &done));
    EXPECT(hits == 0 && evictions == 1 && done == 2, "replay around a pinned key: %llu evictions",
           (unsigned long long)evictions);
    expect_order(idx, (const uint64_t[]){100, 3}, 2, "replay passes over a pinned key");
    /* A zero size on a miss is invalid; the requests before it are done. */
    EXPECT_RC(edge_index_replay(idx, EDGE_REPLAY_LRU, (const uint64_t[]){3, 4},
                                (const uint64_t[]){1, 0}, NULL, 2, 5, NULL, &hits, &bytes_hit,
                                &evictions, &done),
              EDGE_ERR_INVALID);
    EXPECT(done == 1 && hits == 1, "replay stopped at a zero size: done %llu",
           (unsigned long long)done);
    CHECK_OK(edge_index_unpin(idx, p));
    CHECK_OK(edge_index_replay(idx, EDGE_REPLAY_LRU, (const uint64_t[]){5},
                               (const uint64_t[]){5}, NULL, 1, 5, NULL, &hits, &bytes_hit,
                               &evictions, &done));
    EXPECT(evictions == 2 && done == 1, "replay after the unpin evicts both keys");
    expect_order(idx, (const uint64_t[]){5}, 1, "replay after the unpin");
    CHECK_OK(edge_index_verify(idx));
    CHECK_OK(edge_index_free(idx));

    /* An index already over the budget (keys inserted directly, or by a replay with a larger
     * budget): a miss still evicts from the LRU end until the object fits. */
    cur_test = "replay over budget";
    idx = new_index(1, 5);
    insert_key(idx, 10, 5, 0.0, 0);
    insert_key(idx, 11, 5, 1.0, 0);
    insert_key(idx, 12, 1, 2.0, 0);
    CHECK_OK(edge_index_replay(idx, EDGE_REPLAY_LRU, (const uint64_t[]){13},
                               (const uint64_t[]){2}, NULL, 1, 3, NULL, &hits, &bytes_hit,
                               &evictions, &done));
    EXPECT(evictions == 2 && done == 1 && totals_of(idx).bytes == 3,
           "replay into an index over its budget: %llu evictions, %llu bytes (expected 2, 3)",
           (unsigned long long)evictions, (unsigned long long)totals_of(idx).bytes);
    expect_order(idx, (const uint64_t[]){12, 13}, 2, "replay into an index over its budget");
    /* ... and when pins keep it over the budget, the miss cannot be served. */
    const int32_t big = insert_key(idx, 14, 10, 3.0, 1);
    EXPECT_RC(edge_index_replay(idx, EDGE_REPLAY_LRU, (const uint64_t[]){15},
                                (const uint64_t[]){1}, NULL, 1, 3, NULL, &hits, &bytes_hit,
                                &evictions, &done),
              EDGE_ERR_BUSY);
    EXPECT(done == 0 && pins_of(idx, big) == 1, "replay blocked by pins over the budget: done %llu",
           (unsigned long long)done);
    int32_t slot = 99;
    EXPECT_RC(edge_index_lookup(idx, 15, &slot), EDGE_ERR_NOT_FOUND);
    CHECK_OK(edge_index_verify(idx));
    CHECK_OK(edge_index_free(idx));
}

/* ========================= part 2: randomised run against a model ========================= */

typedef struct {
    int resident;
    int32_t slot;
    uint64_t size;
    uint32_t pins;
    uint32_t flags;
    uint64_t accesses;
    double inserted_at, last_access, iat, load_cost;
    uint32_t past_accesses, past_residencies; /* what the index reports for this residency */
    uint32_t hist_accesses, hist_residencies; /* what its last removal left in the ghost list */
    uint64_t ghost_seq; /* the removal event that remembers the key; 0: not remembered */
} model_entry;

/* The ghost list as edge.h describes it: a FIFO of removal events holding at most G of them
 * (128, doubled before an insert would make the resident keys more than G / 2); an event whose
 * key was inserted again is dead but keeps its place until the list grows, which drops the
 * dead ones. */
#define MODEL_GHOST_MAX (4 * MAX_SLOTS)
typedef struct {
    uint64_t key, seq;
} ghost_event;
static ghost_event ghost_queue[MODEL_GHOST_MAX]; /* a ring: oldest at ghost_head */
static uint32_t ghost_head, ghost_len, ghost_cap = 128;
static uint64_t ghost_seq_counter;
static uint64_t ghost_returned, ghost_forgotten; /* of the randomised run: both must happen */

static model_entry model[KEYS];
static uint64_t lru[KEYS]; /* resident keys, LRU end first */
static uint32_t n_lru;
static uint64_t model_bytes;
static int slot_owner[MAX_SLOTS]; /* key held by a slot, -1 if the slot is free */

static int is_resident(uint64_t key) { return key < KEYS && model[key].resident; }

static void lru_unlink(uint64_t key) {
    for (uint32_t i = 0; i < n_lru; i++) {
        if (lru[i] == key) {
            memmove(&lru[i], &lru[i + 1], (n_lru - i - 1) * sizeof(lru[0]));
            n_lru--;
            return;
        }
    }
    EXPECT(0, "model: key %llu not in its LRU list", (unsigned long long)key);
}

static void model_set_slot(uint64_t key, int32_t slot) {
    EXPECT(slot >= 0 && slot < MAX_SLOTS, "slot %d out of the model's range", slot);
    if (slot < 0 || slot >= MAX_SLOTS) return;
    EXPECT(slot_owner[slot] == -1, "key %llu given slot %d, which holds key %d",
           (unsigned long long)key, slot, slot_owner[slot]);
    slot_owner[slot] = (int)key;
    model[key].slot = slot;
}

static int ghost_event_live(const ghost_event *ev) { return model[ev->key].ghost_seq == ev->seq; }

static void model_ghost_grow(void) {
    ghost_cap *= 2;
    uint32_t kept = 0;
    ghost_event live[MODEL_GHOST_MAX];
    for (uint32_t i = 0; i < ghost_len; i++) {
        const ghost_event *ev = &ghost_queue[(ghost_head + i) % MODEL_GHOST_MAX];
        if (ghost_event_live(ev)) live[kept++] = *ev;
    }
    memcpy(ghost_queue, live, kept * sizeof(live[0]));
    ghost_head = 0;
    ghost_len = kept;
}

static uint32_t model_remembered(void) {
    uint32_t n = 0;
    for (uint32_t i = 0; i < ghost_len; i++)
        n += ghost_event_live(&ghost_queue[(ghost_head + i) % MODEL_GHOST_MAX]);
    return n;
}

static uint32_t sat_add(uint32_t a, uint64_t b) {
    return (uint64_t)a + b > UINT32_MAX ? UINT32_MAX : (uint32_t)(a + b);
}

static void model_insert(uint64_t key, int32_t slot, uint64_t size, double load_cost, double now,
                         uint32_t pins) {
    model_entry *e = &model[key];
    if (2 * (n_lru + 1) > ghost_cap) model_ghost_grow(); /* before the insert */
    if (e->ghost_seq) { /* remembered: the history comes back */
        ghost_returned++;
        e->past_accesses = e->hist_accesses;
        e->past_residencies = e->hist_residencies;
        e->ghost_seq = 0;
    } else {
        e->past_accesses = e->past_residencies = 0;
    }
    e->resident = 1;
    e->slot = -1;
    e->size = size;
    e->pins = pins;
    e->flags = 0;
    e->accesses = 1;
    e->inserted_at = e->last_access = now;
    e->iat = 0.0;
    e->load_cost = load_cost;
    lru[n_lru++] = key;
    model_bytes += size;
    if (slot >= 0) model_set_slot(key, slot);
}

static void model_remove(uint64_t key) {
    model_entry *e = &model[key];
    e->hist_accesses = sat_add(e->past_accesses, e->accesses);
    e->hist_residencies = sat_add(e->past_residencies, 1);
    e->ghost_seq = ++ghost_seq_counter;
    ghost_queue[(ghost_head + ghost_len++) % MODEL_GHOST_MAX] = (ghost_event){key, e->ghost_seq};
    if (ghost_len > ghost_cap) { /* the oldest event goes, and its key is forgotten */
        ghost_event *oldest = &ghost_queue[ghost_head];
        if (ghost_event_live(oldest)) {
            model[oldest->key].ghost_seq = 0;
            ghost_forgotten++;
        }
        ghost_head = (ghost_head + 1) % MODEL_GHOST_MAX;
        ghost_len--;
    }
    lru_unlink(key);
    if (e->slot >= 0) slot_owner[e->slot] = -1;
    model_bytes -= e->size;
    e->resident = 0;
    e->slot = -1;
}

static void model_access(uint64_t key, double now, int promote) {
    model_entry *e = &model[key];
    double gap = now - e->last_access;
    if (gap < 0) gap = 0;
    e->iat = e->accesses == 1 ? gap
                              : EDGE_IAT_EWMA_ALPHA * gap + (1.0 - EDGE_IAT_EWMA_ALPHA) * e->iat;
    e->accesses++;
    e->last_access = now;
    if (promote) {
        lru_unlink(key);
        lru[n_lru++] = key;
    }
}

static int64_t pick_resident(void) { return n_lru ? (int64_t)lru[next_rand() % n_lru] : -1; }

static int64_t pick_pinned(void) {
    if (!n_lru) return -1;
    uint32_t start = (uint32_t)(next_rand() % n_lru);
    for (uint32_t i = 0; i < n_lru; i++) {
        uint64_t key = lru[(start + i) % n_lru];
        if (model[key].pins) return (int64_t)key;
    }
    return -1;
}

/* A key that is not resident: one the run never inserts, or an evicted / never-inserted one. */
static uint64_t pick_absent(void) {
    if (next_rand() % 2) return KEYS + next_rand() % 64;
    for (int tries = 0; tries < 8; tries++) {
        uint64_t key = next_rand() % KEYS;
        if (!model[key].resident) return key;
    }
    return KEYS + next_rand() % 64;
}

/* A slot id that names no resident key: out of range either way, or a free slot. */
static int32_t pick_invalid_slot(const edge_index *idx) {
    const uint32_t capacity = totals_of(idx).capacity;
    switch (next_rand() % 5) {
    case 0: return -1;
    case 1: return INT32_MIN;
    case 2: return (int32_t)capacity;
    case 3: return INT32_MAX;
    default: {
        uint32_t start = (uint32_t)(next_rand() % capacity);
        for (uint32_t i = 0; i < capacity; i++) {
            uint32_t s = (start + i) % capacity;
            if (s < MAX_SLOTS && slot_owner[s] == -1) return (int32_t)s;
        }
        return (int32_t)capacity;
    }
    }
}

static void insert_at(int32_t *list, uint32_t *n, uint32_t pos, int32_t value) {
    if (pos > *n) pos = *n;
    memmove(&list[pos + 1], &list[pos], (*n - pos) * sizeof(list[0]));
    list[pos] = value;
    (*n)++;
}

/* Up to max slots of resident keys, some listed twice. */
static uint32_t pick_resident_slots(int32_t *list, uint32_t max) {
    uint32_t n = (uint32_t)(next_rand() % (max + 1));
    if (!n_lru) return 0;
    for (uint32_t i = 0; i < n; i++) {
        list[i] = (i > 0 && next_rand() % 4 == 0) ? list[next_rand() % i]
                                                  : model[pick_resident()].slot;
    }
    return n;
}

static void check_key(const edge_index *idx, uint64_t key) {
    int32_t slot = 99;
    if (!is_resident(key)) {
        EXPECT_RC(edge_index_lookup(idx, key, &slot), EDGE_ERR_NOT_FOUND);
        EXPECT(slot == -1, "lookup of absent key %llu gave slot %d", (unsigned long long)key,
               slot);
        return;
    }
    const model_entry *e = &model[key];
    CHECK_OK(edge_index_lookup(idx, key, &slot));
    EXPECT(slot == e->slot, "key %llu at slot %d, model says %d", (unsigned long long)key, slot,
           e->slot);
    edge_slot_info info = info_of(idx, e->slot);
    EXPECT(info.key == key && info.size == e->size && info.accesses == e->accesses &&
               info.inserted_at == e->inserted_at && info.last_access == e->last_access &&
               close_to(info.iat_ewma, e->iat) && info.load_cost == e->load_cost &&
               info.pin_count == e->pins && info.flags == e->flags &&
               info.past_accesses == e->past_accesses &&
               info.past_residencies == e->past_residencies,
           "slot_info of key %llu: size %llu/%llu accesses %llu/%llu last %g/%g iat %g/%g "
           "pins %u/%u flags %#x/%#x past %u/%u residencies %u/%u",
           (unsigned long long)key, (unsigned long long)info.size, (unsigned long long)e->size,
           (unsigned long long)info.accesses, (unsigned long long)e->accesses, info.last_access,
           e->last_access, info.iat_ewma, e->iat, info.pin_count, e->pins, info.flags, e->flags,
           info.past_accesses, e->past_accesses, info.past_residencies, e->past_residencies);
    EXPECT(pins_of(idx, e->slot) == e->pins, "pin_count of key %llu", (unsigned long long)key);
}

/* Totals, the whole LRU order (pinned keys included) and every pin count at every step; every
 * field of every key when full. */
static void check_model(const edge_index *idx, int full) {
    uint32_t pinned_count = 0;
    uint64_t pinned_bytes = 0;
    for (uint32_t i = 0; i < n_lru; i++) {
        const model_entry *e = &model[lru[i]];
        if (e->pins) {
            pinned_count++;
            pinned_bytes += e->size;
        }
    }
    edge_index_totals t = totals_of(idx);
    EXPECT(t.remembered == model_remembered(), "remembered %u, model %u", t.remembered,
           model_remembered());
    EXPECT(t.count == n_lru && t.bytes == model_bytes && t.pinned_count == pinned_count &&
               t.pinned_bytes == pinned_bytes && t.capacity <= MAX_SLOTS,
           "totals %u/%llu pinned %u/%llu, model %u/%llu pinned %u/%llu", t.count,
           (unsigned long long)t.bytes, t.pinned_count, (unsigned long long)t.pinned_bytes, n_lru,
           (unsigned long long)model_bytes, pinned_count, (unsigned long long)pinned_bytes);
    int32_t walked[MAX_SLOTS];
    uint32_t n = 0;
    CHECK_OK(edge_index_walk_lru(idx, MAX_SLOTS, 0, walked, &n));
    EXPECT(n == n_lru, "walk saw %u keys, model has %u", n, n_lru);
    for (uint32_t i = 0; i < n && i < n_lru; i++) {
        uint32_t pins = 0xdeadbeefu;
        CHECK_OK(edge_index_pin_count(idx, walked[i], &pins));
        if (walked[i] != model[lru[i]].slot || pins != model[lru[i]].pins) {
            EXPECT(0, "LRU position %u: slot %d with %u pins, model has key %llu at slot %d "
                   "with %u pins", i, walked[i], pins, (unsigned long long)lru[i],
                   model[lru[i]].slot, model[lru[i]].pins);
            break;
        }
    }
    if (full) {
        for (uint64_t key = 0; key < KEYS; key++) check_key(idx, key);
    }
}

static void check_features(edge_index *idx, const int32_t *slots, uint32_t n, double now) {
    float feats[MAX_BATCH * EDGE_N_FEATURES];
    CHECK_OK(edge_index_features(idx, slots, n, now, feats));
    for (uint32_t i = 0; i < n; i++) {
        const int owner = slots[i] >= 0 && slots[i] < MAX_SLOTS ? slot_owner[slots[i]] : -1;
        EXPECT(owner >= 0, "features of slot %d, which holds no key", slots[i]);
        if (owner < 0) continue;
        const model_entry *e = &model[owner];
        const float *row = feats + (size_t)i * EDGE_N_FEATURES;
        const double residency = now - e->inserted_at;
        EXPECT(row[EDGE_FEAT_AGE] == (float)(now - e->last_access) &&
                   row[EDGE_FEAT_SIZE] == (float)e->size &&
                   row[EDGE_FEAT_ACCESSES] == (float)e->accesses &&
                   closef(row[EDGE_FEAT_IAT], (float)(e->accesses > 1 ? e->iat : residency)) &&
                   row[EDGE_FEAT_LOAD_COST] == (float)e->load_cost &&
                   row[EDGE_FEAT_RESIDENCY] == (float)residency &&
                   row[EDGE_FEAT_PAST_ACCESSES] == (float)e->past_accesses &&
                   row[EDGE_FEAT_PAST_RESIDENCIES] == (float)e->past_residencies,
               "feature row of slot %d", slots[i]);
    }
}

/* The model's replay: the semantics of edge_index_replay as edge.h states them. */
static void model_replay(int policy, const uint64_t *keys, const uint64_t *sizes,
                         const double *times, uint32_t n, uint64_t budget, uint8_t *hits_out,
                         uint64_t *n_hits, uint64_t *bytes_hit, uint64_t *n_evictions) {
    *n_hits = *bytes_hit = *n_evictions = 0;
    for (uint32_t i = 0; i < n; i++) {
        const double now = times ? times[i] : (double)i;
        const uint64_t key = keys[i];
        if (model[key].resident) {
            model_access(key, now, policy == EDGE_REPLAY_LRU);
            hits_out[i] = 1;
            (*n_hits)++;
            *bytes_hit += sizes[i];
            continue;
        }
        hits_out[i] = 0;
        if (sizes[i] > budget) continue;
        while (model_bytes + sizes[i] > budget) {
            uint32_t v = 0;
            while (v < n_lru && model[lru[v]].pins) v++;
            if (v == n_lru) {
                EXPECT(0, "model replay: pins leave no room");
                return;
            }
            model_remove(lru[v]);
            (*n_evictions)++;
        }
        model_insert(key, -1, sizes[i], 0.0, now, 0); /* slot learnt from the index afterwards */
    }
}

static void random_run(void) {
    cur_test = "random";
    for (int i = 0; i < MAX_SLOTS; i++) slot_owner[i] = -1;
    edge_index *idx = new_index(1, 7);
    int32_t slots[MAX_BATCH], out[MAX_BATCH];
    uint64_t keys[MAX_BATCH];
    uint32_t n = 0;
    uint64_t n_failed_batches = 0, max_pinned = 0;
    for (int step = 0; step < STEPS; step++) {
        cur_step = step;
        const uint64_t key = next_rand() % KEYS;
        const double now = (double)step;
        int32_t slot = -1;
        const int op = (int)(next_rand() % 24);
        switch (op) {
        case 0:
        case 1:
        case 2: { /* insert, now and then with pins already taken */
            const uint64_t size = 1 + next_rand() % 4096;
            const double load_cost = (double)(next_rand() % 1000) / 64.0;
            const uint32_t pins = next_rand() % 8 == 0 ? 1 + (uint32_t)(next_rand() % 2) : 0;
            if (model[key].resident) SNAPSHOT(idx);
            int rc = edge_index_insert(idx, key, size, load_cost, now, pins, &slot);
            if (model[key].resident) {
                EXPECT(rc == EDGE_ERR_EXISTS, "insert of resident key rc=%d", rc);
                EXPECT_UNCHANGED(idx, "insert of a resident key");
            } else {
                EXPECT(rc == EDGE_OK && slot >= 0, "insert rc=%d slot=%d", rc, slot);
                if (rc == EDGE_OK) model_insert(key, slot, size, load_cost, now, pins);
            }
            check_key(idx, key);
            break;
        }
        case 3:
        case 4: { /* remove */
            int rc = edge_index_remove(idx, key);
            if (!model[key].resident) {
                EXPECT(rc == EDGE_ERR_NOT_FOUND, "remove absent rc=%d", rc);
            } else if (model[key].pins) {
                EXPECT(rc == EDGE_ERR_BUSY, "remove pinned rc=%d", rc);
            } else {
                EXPECT(rc == EDGE_OK, "remove rc=%d", rc);
                if (rc == EDGE_OK) model_remove(key);
            }
            check_key(idx, key);
            break;
        }
        case 5: { /* acquire by key */
            int rc = edge_index_acquire(idx, key, now, &slot);
            if (model[key].resident) {
                EXPECT(rc == EDGE_OK && slot == model[key].slot, "acquire rc=%d slot=%d", rc,
                       slot);
                model_access(key, now, 1);
                model[key].pins++;
            } else {
                EXPECT(rc == EDGE_ERR_NOT_FOUND && slot == -1, "acquire absent rc=%d", rc);
            }
            check_key(idx, key);
            break;
        }
        case 6: /* acquire_slot: the hit path */
        case 7: { /* pin */
            const int64_t k = pick_resident();
            if (k < 0 || next_rand() % 6 == 0) {
                const int32_t bad = pick_invalid_slot(idx);
                SNAPSHOT(idx);
                if (op == 6) EXPECT_RC(edge_index_acquire_slot(idx, bad, now), EDGE_ERR_INVALID);
                else EXPECT_RC(edge_index_pin(idx, bad), EDGE_ERR_INVALID);
                EXPECT_UNCHANGED(idx, op == 6 ? "acquire_slot of an invalid slot"
                                              : "pin of an invalid slot");
                break;
            }
            if (op == 6) {
                CHECK_OK(edge_index_acquire_slot(idx, model[k].slot, now));
                model_access((uint64_t)k, now, 1);
            } else {
                CHECK_OK(edge_index_pin(idx, model[k].slot));
            }
            model[k].pins++;
            check_key(idx, (uint64_t)k);
            break;
        }
        case 8:
        case 9: { /* unpin: mostly a pinned key, sometimes any key or an invalid slot */
            int64_t k = next_rand() % 3 ? pick_pinned() : (int64_t)key;
            if (next_rand() % 8 == 0) {
                const int32_t bad = pick_invalid_slot(idx);
                SNAPSHOT(idx);
                EXPECT_RC(edge_index_unpin(idx, bad), EDGE_ERR_INVALID);
                EXPECT_UNCHANGED(idx, "unpin of an invalid slot");
                break;
            }
            if (k < 0 || !model[k].resident) break;
            if (model[k].pins) {
                CHECK_OK(edge_index_unpin(idx, model[k].slot));
                model[k].pins--;
            } else {
                SNAPSHOT(idx);
                EXPECT_RC(edge_index_unpin(idx, model[k].slot), EDGE_ERR_BUSY);
                EXPECT_UNCHANGED(idx, "unpin of an unpinned slot");
            }
            check_key(idx, (uint64_t)k);
            break;
        }
        case 10: { /* pin_count and set_flags */
            const int64_t k = pick_resident();
            if (k < 0 || next_rand() % 6 == 0) {
                const int32_t bad = pick_invalid_slot(idx);
                uint32_t pins = 0;
                SNAPSHOT(idx);
                EXPECT_RC(edge_index_pin_count(idx, bad, &pins), EDGE_ERR_INVALID);
                EXPECT_RC(edge_index_set_flags(idx, bad, 5u), EDGE_ERR_INVALID);
                EXPECT_UNCHANGED(idx, "set_flags of an invalid slot");
                break;
            }
            EXPECT(pins_of(idx, model[k].slot) == model[k].pins, "pin_count");
            const uint32_t flags = (uint32_t)next_rand();
            CHECK_OK(edge_index_set_flags(idx, model[k].slot, flags));
            model[k].flags = flags;
            EXPECT(info_of(idx, model[k].slot).flags == flags, "slot_info shows other flags");
            check_key(idx, (uint64_t)k);
            break;
        }
        case 11: { /* walk + features of the LRU candidates */
            const uint32_t k = (uint32_t)(next_rand() % MAX_BATCH);
            CHECK_OK(edge_index_walk_lru(idx, k, 1, slots, &n));
            uint32_t want = 0;
            for (uint32_t i = 0; i < n_lru && want < k; i++) {
                if (model[lru[i]].pins) continue;
                EXPECT(want < n && slots[want] == model[lru[i]].slot,
                       "unpinned walk position %u", want);
                want++;
            }
            EXPECT(n == want, "unpinned walk gave %u slots, model %u", n, want);
            if (n == want) check_features(idx, slots, n, now);
            break;
        }
        case 12: { /* uniform sample of unpinned slots */
            const uint32_t k = (uint32_t)(next_rand() % MAX_BATCH);
            uint32_t unpinned = 0;
            for (uint32_t i = 0; i < n_lru; i++) unpinned += model[lru[i]].pins == 0;
            CHECK_OK(edge_index_sample_unpinned(idx, k, slots, &n));
            EXPECT(n == (k < unpinned ? k : unpinned), "sample of %u gave %u of %u unpinned", k,
                   n, unpinned);
            for (uint32_t i = 0; i < n; i++) {
                const int owner = slots[i] >= 0 && slots[i] < MAX_SLOTS ? slot_owner[slots[i]] : -1;
                EXPECT(owner >= 0 && model[owner].pins == 0, "sample gave slot %d", slots[i]);
                for (uint32_t j = 0; j < i; j++) EXPECT(slots[i] != slots[j], "repeat in sample");
            }
            break;
        }
        case 13: { /* batch lookup and touch */
            const uint32_t m = (uint32_t)(next_rand() % MAX_BATCH);
            uint32_t expect = 0, found = 0;
            for (uint32_t i = 0; i < m; i++) {
                keys[i] = next_rand() % (KEYS + 64); /* some keys never exist */
                expect += (uint32_t)is_resident(keys[i]);
            }
            CHECK_OK(edge_index_lookup_many(idx, keys, m, out, &found));
            EXPECT(found == expect, "lookup_many found %u expected %u", found, expect);
            for (uint32_t i = 0; i < m; i++)
                EXPECT(out[i] == (is_resident(keys[i]) ? model[keys[i]].slot : -1),
                       "lookup_many slot %u", i);
            CHECK_OK(edge_index_touch_many(idx, keys, m, now, out, &found));
            EXPECT(found == expect, "touch_many found %u expected %u", found, expect);
            for (uint32_t i = 0; i < m; i++) {
                if (!is_resident(keys[i])) {
                    EXPECT(out[i] == -1, "touch_many slot of an absent key");
                    continue;
                }
                EXPECT(out[i] == model[keys[i]].slot, "touch_many slot %u", i);
                model_access(keys[i], now, 1);
            }
            break;
        }
        case 14: { /* short replay on top of the current state, budget above pinned bytes */
            const edge_index_totals t = totals_of(idx);
            uint64_t rk[32], rs[32], hits, bytes_hit, evictions, done;
            uint64_t want_hits, want_bytes_hit, want_evictions;
            double times[32];
            uint8_t hit_flags[32], want_flags[32];
            for (int i = 0; i < 32; i++) {
                rk[i] = next_rand() % KEYS;
                times[i] = now + i / 64.0;
                rs[i] = model[rk[i]].resident ? model[rk[i]].size : 1 + next_rand() % 4096;
            }
            const uint64_t budget = t.pinned_bytes + 64 * 4096;
            const int policy = (int)(next_rand() % 2);
            const int with_times = next_rand() % 4 != 0; /* NULL: request i at time i (back) */
            const int with_flags = next_rand() % 4 != 0;
            CHECK_OK(edge_index_replay(idx, policy, rk, rs, with_times ? times : NULL, 32, budget,
                                       with_flags ? hit_flags : NULL, &hits, &bytes_hit,
                                       &evictions, &done));
            model_replay(policy, rk, rs, with_times ? times : NULL, 32, budget, want_flags,
                         &want_hits, &want_bytes_hit, &want_evictions);
            EXPECT(done == 32 && hits == want_hits && bytes_hit == want_bytes_hit &&
                       evictions == want_evictions,
                   "replay done %llu hits %llu/%llu bytes_hit %llu/%llu evictions %llu/%llu",
                   (unsigned long long)done, (unsigned long long)hits,
                   (unsigned long long)want_hits, (unsigned long long)bytes_hit,
                   (unsigned long long)want_bytes_hit, (unsigned long long)evictions,
                   (unsigned long long)want_evictions);
            if (with_flags) EXPECT(memcmp(hit_flags, want_flags, 32) == 0, "replay hits_out");
            /* Slots of the keys the replay inserted (and kept) come from the index. */
            for (uint32_t i = 0; i < n_lru; i++) {
                if (model[lru[i]].slot >= 0) continue;
                CHECK_OK(edge_index_lookup(idx, lru[i], &slot));
                model_set_slot(lru[i], slot);
            }
            EXPECT(totals_of(idx).bytes <= budget, "replay exceeded its budget");
            break;
        }
        case 15:
        case 16: { /* acquire_many: all resident, or one absent and nothing changes */
            uint32_t m = (uint32_t)(next_rand() % 7), found = 99, expect = 0;
            if (!n_lru) m = 0;
            for (uint32_t i = 0; i < m; i++)
                keys[i] = (i > 0 && next_rand() % 4 == 0) ? keys[next_rand() % i]
                                                          : (uint64_t)pick_resident();
            if (next_rand() % 3 == 0) { /* one key (a duplicate, maybe) swapped for an absent one */
                if (m == 0) m = 1;
                keys[next_rand() % m] = pick_absent();
            }
            for (uint32_t i = 0; i < m; i++) expect += (uint32_t)is_resident(keys[i]);
            if (expect < m) {
                SNAPSHOT(idx);
                EXPECT_RC(edge_index_acquire_many(idx, keys, m, now, out, &found),
                          EDGE_ERR_NOT_FOUND);
                EXPECT_UNCHANGED(idx, "acquire_many with an absent key");
                n_failed_batches++;
            } else {
                CHECK_OK(edge_index_acquire_many(idx, keys, m, now, out, &found));
            }
            EXPECT(found == expect, "acquire_many found %u of %u, expected %u", found, m, expect);
            for (uint32_t i = 0; i < m; i++)
                EXPECT(out[i] == (is_resident(keys[i]) ? model[keys[i]].slot : -1),
                       "acquire_many slot %u", i);
            if (expect == m) {
                for (uint32_t i = 0; i < m; i++) {
                    model_access(keys[i], now, 1);
                    model[keys[i]].pins++;
                }
                for (uint32_t i = 0; i < m; i++) check_key(idx, keys[i]);
            }
            break;
        }
        case 17:   /* pin_many */
        case 18: { /* touch_slots */
            uint32_t m = pick_resident_slots(slots, 6);
            const int with_invalid = next_rand() % 4 == 0;
            if (with_invalid) insert_at(slots, &m, m ? 1 + (uint32_t)(next_rand() % m) : 0,
                                        pick_invalid_slot(idx));
            if (with_invalid) {
                SNAPSHOT(idx);
                if (op == 17) EXPECT_RC(edge_index_pin_many(idx, slots, m), EDGE_ERR_INVALID);
                else EXPECT_RC(edge_index_touch_slots(idx, slots, m, now), EDGE_ERR_INVALID);
                EXPECT_UNCHANGED(idx, op == 17 ? "pin_many with an invalid slot"
                                               : "touch_slots with an invalid slot");
                n_failed_batches++;
                break;
            }
            if (op == 17) CHECK_OK(edge_index_pin_many(idx, slots, m));
            else CHECK_OK(edge_index_touch_slots(idx, slots, m, now));
            for (uint32_t i = 0; i < m; i++) {
                const uint64_t k = (uint64_t)slot_owner[slots[i]];
                if (op == 17) model[k].pins++;
                else model_access(k, now, 1);
            }
            for (uint32_t i = 0; i < m; i++) check_key(idx, (uint64_t)slot_owner[slots[i]]);
            break;
        }
        case 19:
        case 20:
        case 21: { /* unpin_many: within the pins, past zero, or with an invalid slot */
            static uint32_t taken[KEYS];
            uint32_t m = 0;
            const uint32_t want = (uint32_t)(next_rand() % 13);
            for (uint32_t tries = 0; tries < 2 * want && m < want; tries++) {
                const int64_t k = pick_pinned();
                if (k < 0) break;
                if (taken[k] < model[k].pins) {
                    slots[m++] = model[k].slot;
                    taken[k]++;
                }
            }
            const int variant = (int)(next_rand() % 4); /* 0: past zero, 1: invalid, else fine */
            int failing = 0;
            if (variant == 0) {
                const int64_t k = pick_resident();
                if (k >= 0 && model[k].pins - taken[k] < 4) {
                    for (uint32_t extra = model[k].pins - taken[k] + 1; extra > 0; extra--)
                        insert_at(slots, &m, (uint32_t)(next_rand() % (m + 1)), model[k].slot);
                    failing = EDGE_ERR_BUSY;
                }
            } else if (variant == 1) {
                insert_at(slots, &m, m ? 1 + (uint32_t)(next_rand() % m) : 0,
                          pick_invalid_slot(idx));
                failing = EDGE_ERR_INVALID;
            }
            for (uint32_t i = 0; i < m; i++) {
                if (slots[i] >= 0 && slots[i] < MAX_SLOTS && slot_owner[slots[i]] >= 0)
                    taken[slot_owner[slots[i]]] = 0;
            }
            if (failing) {
                SNAPSHOT(idx);
                EXPECT_RC(edge_index_unpin_many(idx, slots, m), failing);
                EXPECT_UNCHANGED(idx, "a failed unpin_many");
                n_failed_batches++;
                break;
            }
            CHECK_OK(edge_index_unpin_many(idx, slots, m));
            for (uint32_t i = 0; i < m; i++) model[slot_owner[slots[i]]].pins--;
            for (uint32_t i = 0; i < m; i++) check_key(idx, (uint64_t)slot_owner[slots[i]]);
            break;
        }
        default: { /* touch */
            int rc = edge_index_touch(idx, key, now, &slot);
            if (model[key].resident) {
                EXPECT(rc == EDGE_OK && slot == model[key].slot, "touch rc=%d", rc);
                model_access(key, now, 1);
            } else {
                EXPECT(rc == EDGE_ERR_NOT_FOUND && slot == -1, "touch absent rc=%d", rc);
            }
            check_key(idx, key);
        }
        }
        EXPECT_RC(edge_index_verify(idx), EDGE_OK);
        check_model(idx, step % FULL_CHECK_EVERY == 0);
        uint32_t pinned = totals_of(idx).pinned_count;
        if (pinned > max_pinned) max_pinned = pinned;
    }
    cur_step = STEPS;
    check_model(idx, 1);
    /* The run must have reached the interesting states, or it proves little. */
    EXPECT(n_failed_batches > STEPS / 100, "only %llu all-or-nothing refusals",
           (unsigned long long)n_failed_batches);
    EXPECT(totals_of(idx).capacity >= 256, "the index never grew");
    EXPECT(max_pinned > 10 && max_pinned < KEYS / 2, "at most %llu keys pinned at once",
           (unsigned long long)max_pinned);
    CHECK_OK(edge_index_free(idx));
    cur_step = -1;
    EXPECT(ghost_returned > 1000 && ghost_forgotten > 1000,
           "the run exercised the ghost list too little: %llu keys returned, %llu forgotten",
           (unsigned long long)ghost_returned, (unsigned long long)ghost_forgotten);
    printf("test_index: %d steps ok (final: %u keys, %llu bytes, %llu refused batches, "
           "at most %llu pinned; ghost list: %llu keys returned with their history, %llu "
           "forgotten)\n",
           STEPS, n_lru, (unsigned long long)model_bytes, (unsigned long long)n_failed_batches,
           (unsigned long long)max_pinned, (unsigned long long)ghost_returned,
           (unsigned long long)ghost_forgotten);
}

/* edge_hash_ngrams against zlib: the expected (bucket, signed count) pairs were computed with
 * Python's zlib.crc32(gram.encode(), 7) over the grams of the definition in edge.h, 97 buckets. */
static void expect_buckets(const double *out, const int (*want)[2], int n_want, const char *what) {
    double expected[97] = {0};
    for (int i = 0; i < n_want; i++)
        expected[want[i][0]] = want[i][1];
    for (int b = 0; b < 97; b++)
        EXPECT(out[b] == expected[b], "%s: bucket %d = %g, expected %g", what, b, out[b],
               expected[b]);
}

static void test_hash_ngrams(void) {
    cur_test = "hash_ngrams";
    double out[97];
    uint32_t grams = 0;
    const uint32_t words12[] = {1, 2};
    const char *hw = "hello\x1fworld", *hw_padded = " hello world ";
    CHECK_OK(edge_hash_ngrams((const uint8_t *)hw, strlen(hw), (const uint8_t *)hw_padded,
                              strlen(hw_padded), words12, 2, NULL, 0, 7, 0, out, 97, &grams));
    const int want_hw[][2] = {{29, -1}, {32, -1}, {44, -1}};
    expect_buckets(out, want_hw, 3, "hello world, word 1- and 2-grams");
    EXPECT(grams == 3, "hello world: %u grams, expected 3", grams);

    /* Character 3-grams over code points: ü is two bytes, 東 and 京 three each. */
    const uint32_t chars3[] = {3};
    const char *zt = "z\xc3\xbcrich\x1f\xe6\x9d\xb1\xe4\xba\xac";
    const char *zt_padded = " z\xc3\xbcrich \xe6\x9d\xb1\xe4\xba\xac ";
    CHECK_OK(edge_hash_ngrams((const uint8_t *)zt, strlen(zt), (const uint8_t *)zt_padded,
                              strlen(zt_padded), NULL, 0, chars3, 1, 7, 0, out, 97, &grams));
    const int want_zt[][2] = {{1, 1}, {2, -1}, {8, -1}, {9, -1}, {12, 1},
                              {26, 1}, {47, -1}, {84, -1}, {85, 1}};
    expect_buckets(out, want_zt, 9, "zurich tokyo, char 3-grams");
    EXPECT(grams == 9, "zurich tokyo: %u grams, expected 9", grams);
    /* Normalised: the same counts over their L2 norm, sqrt(9) here (nine grams of weight 1). */
    CHECK_OK(edge_hash_ngrams((const uint8_t *)zt, strlen(zt), (const uint8_t *)zt_padded,
                              strlen(zt_padded), NULL, 0, chars3, 1, 7, 1, out, 97, &grams));
    EXPECT(close_to(out[1], 1.0 / 3.0) && close_to(out[2], -1.0 / 3.0) && out[0] == 0.0,
           "zurich tokyo normalised: out[0..2] = %g %g %g", out[0], out[1], out[2]);

    /* Fewer words or code points than n: no gram, and out is still zeroed. */
    const uint32_t big[] = {5};
    out[3] = 42.0;
    CHECK_OK(edge_hash_ngrams((const uint8_t *)"a", 1, (const uint8_t *)" a ", 3, big, 1, big, 1,
                              0, 0, out, 97, &grams));
    EXPECT(grams == 0 && out[3] == 0.0, "short text: %u grams, out[3] = %g", grams, out[3]);
    out[3] = 42.0;
    CHECK_OK(edge_hash_ngrams(NULL, 0, NULL, 0, words12, 2, chars3, 1, 0, 1, out, 97, &grams));
    EXPECT(grams == 0 && out[3] == 0.0, "empty text, normalised: %u grams, out[3] = %g", grams,
           out[3]);

    const uint32_t zero[] = {0};
    EXPECT_RC(edge_hash_ngrams((const uint8_t *)"a", 1, NULL, 0, zero, 1, NULL, 0, 0, 0, out, 97,
                               &grams), EDGE_ERR_INVALID);
    EXPECT_RC(edge_hash_ngrams(NULL, 1, NULL, 0, words12, 2, NULL, 0, 0, 0, out, 97, &grams),
              EDGE_ERR_INVALID);
    EXPECT_RC(edge_hash_ngrams((const uint8_t *)"a", 1, NULL, 0, words12, 2, NULL, 0, 0, 0, out, 0,
                               &grams), EDGE_ERR_INVALID);
    EXPECT_RC(edge_hash_ngrams((const uint8_t *)"a", 1, NULL, 0, words12, 2, NULL, 0, 0, 0, NULL,
                               97, &grams), EDGE_ERR_INVALID);
}

/* The whole vector of an ASCII prompt: "hello world" at dim 16 with the extractor's defaults
 * (word 1- and 2-grams, char 3- and 4-grams, seed 0, shape weight 0.5) is the Python
 * definition's value pinned in tests/test_router_features.py (GOLDEN, 6 decimals). */
static void test_hash_features_ascii(void) {
    cur_test = "hash_features_ascii";
    const double golden[16] = {-0.346879, -0.173439, -0.346879, 0.0, -0.693758, 0.0, 0.0,
                               0.173439, 0.0, 0.442185, 0.132098, 0.070075, 0.0, 0.0, 0.0, 0.0};
    const uint32_t words12[] = {1, 2}, chars34[] = {3, 4};
    double out[16];
    uint32_t grams = 0;
    CHECK_OK(edge_hash_features_ascii((const uint8_t *)"hello world", 11, 1, words12, 2, chars34,
                                      2, 0, 0.5, out, 16, &grams));
    for (int k = 0; k < 16; k++)
        EXPECT(fabs(out[k] - golden[k]) < 1e-6, "hello world [%d] = %.6f, expected %.6f", k,
               out[k], golden[k]);
    /* 2 + 1 word grams; 11 char 3-grams and 10 4-grams of " hello world " (13 characters). */
    EXPECT(grams == 24, "hello world: %u grams, expected 24", grams);

    /* Lower-cased, "Hello World" hashes the same grams; its shape block (from 9: bias, log
     * chars, log words, digits, upper, punctuation, newlines) counts 2 upper-case letters of 11. */
    CHECK_OK(edge_hash_features_ascii((const uint8_t *)"Hello World", 11, 1, words12, 2, chars34,
                                      2, 0, 0.5, out, 16, &grams));
    EXPECT(grams == 24 && close_to(out[13] / out[9], 2.0 / 11.0),
           "Hello World: %u grams, upper / bias = %g, expected 2/11", grams, out[13] / out[9]);
    for (int k = 0; k < 9; k++)
        EXPECT((out[k] > 0) == (golden[k] > 0) && (out[k] < 0) == (golden[k] < 0),
               "Hello World bucket %d = %g, hello world's %g", k, out[k], golden[k]);

    /* No text: no gram (" " + "" + " " is shorter than 3), the bias alone, normalised to 1. */
    CHECK_OK(edge_hash_features_ascii(NULL, 0, 1, words12, 2, chars34, 2, 0, 0.5, out, 16,
                                      &grams));
    EXPECT(grams == 0 && out[9] == 1.0, "empty text: %u grams, bias %g", grams, out[9]);
    for (int k = 0; k < 16; k++)
        EXPECT(k == 9 || out[k] == 0.0, "empty text [%d] = %g", k, out[k]);

    EXPECT_RC(edge_hash_features_ascii((const uint8_t *)"caf\xc3\xa9", 5, 1, words12, 2, chars34, 2,
                                       0, 0.5, out, 16, &grams), EDGE_ERR_INVALID);
    EXPECT_RC(edge_hash_features_ascii((const uint8_t *)"a", 1, 1, words12, 2, chars34, 2, 0, 0.5,
                                       out, EDGE_N_SHAPE_FEATURES, &grams), EDGE_ERR_INVALID);
    EXPECT_RC(edge_hash_features_ascii(NULL, 1, 1, words12, 2, chars34, 2, 0, 0.5, out, 16,
                                       &grams), EDGE_ERR_INVALID);
}

/* edge_linucb_scores and edge_paging_penalty against sums written out by hand (d = 2, so
 * x'A^-1x = a00 x0^2 + 2 a01 x0 x1 + a11 x1^2), in both row layouts. */
static void test_linucb_scores(void) {
    cur_test = "linucb_scores";
    const double x[2] = {0.6, 0.8};
    /* Three arms, whole layout: theta (2) then A^-1 row-major (4); row_len 6. */
    const double whole[3][6] = {{0.5, -0.5, 1.0, 0.0, 0.0, 1.0},
                                {0.1, 0.2, 2.0, 0.5, 0.5, 1.0},
                                {0.0, 0.3, 0.25, 0.0, 0.0, 0.25}};
    /* The same arms packed: theta then a00, a01, a11; rows padded to 6 (row_len > needed). */
    const double packed[3][6] = {{0.5, -0.5, 1.0, 0.0, 1.0, 99.0},
                                 {0.1, 0.2, 2.0, 0.5, 1.0, 99.0},
                                 {0.0, 0.3, 0.25, 0.0, 0.25, 99.0}};
    double expected_mean[3], expected_bonus[3];
    for (int a = 0; a < 3; a++) {
        const double *r = whole[a];
        expected_mean[a] = r[0] * x[0] + r[1] * x[1] + 0.1;
        double quad = r[2] * x[0] * x[0] + 2 * r[3] * x[0] * x[1] + r[5] * x[1] * x[1];
        expected_bonus[a] = 0.5 * sqrt(quad);
    }
    const double penalty[3] = {0.0, 0.2, 0.0};
    double weights[4], mean[3], bonus[3], score[3];
    int32_t best = -1, ties[3];
    uint32_t n_ties = 0;
    for (int layout = 0; layout < 2; layout++) {
        const double *rows = layout ? &packed[0][0] : &whole[0][0];
        CHECK_OK(edge_linucb_scores(rows, 3, 6, 2, layout, x, weights, 0.1, 0.5, penalty, mean,
                                    bonus, score, 1e-12, &best, ties, &n_ties));
        int want = 0;
        for (int a = 0; a < 3; a++) {
            double want_score = expected_mean[a] + expected_bonus[a] - penalty[a];
            EXPECT(close_to(mean[a], expected_mean[a]) && close_to(bonus[a], expected_bonus[a]) &&
                       close_to(score[a], want_score),
                   "layout %d arm %d: mean %g bonus %g score %g, expected %g %g %g", layout, a,
                   mean[a], bonus[a], score[a], expected_mean[a], expected_bonus[a], want_score);
            if (want_score > expected_mean[want] + expected_bonus[want] - penalty[want])
                want = a;
        }
        EXPECT(best == want && n_ties == 1 && ties[0] == want,
               "layout %d: best %d (%u ties), expected %d", layout, best, n_ties, want);
    }
    /* alpha = 0: bonus 0 and the A^-1 part never read (NaN there would poison the scores). */
    const double nan_inv[2][6] = {{0.5, -0.5, NAN, NAN, NAN, NAN}, {0.1, 0.2, NAN, NAN, NAN, NAN}};
    for (int layout = 0; layout < 2; layout++) {
        CHECK_OK(edge_linucb_scores(&nan_inv[0][0], 2, 6, 2, layout, x, weights, 0.1, 0.0, NULL,
                                    mean, bonus, score, 1e-12, &best, ties, &n_ties));
        EXPECT(close_to(mean[0], expected_mean[0]) && close_to(mean[1], expected_mean[1]) &&
                   bonus[0] == 0.0 && bonus[1] == 0.0 && score[0] == mean[0] &&
                   score[1] == mean[1] && best == 1 && n_ties == 1,
               "alpha 0, layout %d: mean %g %g bonus %g %g best %d", layout, mean[0], mean[1],
               bonus[0], bonus[1], best);
    }
    /* Equal rows tie: every arm listed, the first one best. */
    const double same[2][6] = {{0.1, 0.1, 1.0, 0.0, 0.0, 1.0}, {0.1, 0.1, 1.0, 0.0, 0.0, 1.0}};
    CHECK_OK(edge_linucb_scores(&same[0][0], 2, 6, 2, 0, x, weights, 0.0, 1.0, NULL, mean, bonus,
                                score, 1e-12, &best, ties, &n_ties));
    EXPECT(best == 0 && n_ties == 2 && ties[0] == 0 && ties[1] == 1,
           "equal arms: best %d, %u ties", best, n_ties);
    EXPECT_RC(edge_linucb_scores(&whole[0][0], 3, 5, 2, 0, x, weights, 0.0, 1.0, NULL, mean, bonus,
                                 score, 1e-12, &best, ties, &n_ties), EDGE_ERR_INVALID);
    EXPECT_RC(edge_linucb_scores(&whole[0][0], 0, 6, 2, 0, x, weights, 0.0, 1.0, NULL, mean, bonus,
                                 score, 1e-12, &best, ties, &n_ties), EDGE_ERR_INVALID);
    EXPECT_RC(edge_linucb_scores(&whole[0][0], 3, 6, 2, 0, x, weights, 0.0, 1.0, NULL, mean, bonus,
                                 score, -1.0, &best, ties, &n_ties), EDGE_ERR_INVALID);
    EXPECT_RC(edge_linucb_scores(&whole[0][0], 3, 6, 2, 0, NULL, weights, 0.0, 1.0, NULL, mean,
                                 bonus, score, 1e-12, &best, ties, &n_ties), EDGE_ERR_INVALID);

    /* Sherman-Morrison against the inverse of A = I + x x' written out: det 2, so A^-1 =
     * [[0.82, -0.24], [-0.24, 0.68]], and theta = A^-1 (1 * x) = (0.3, 0.4). */
    cur_test = "linucb_update";
    double block[6] = {0.0, 0.0, 1.0, 0.0, 0.0, 1.0}, scratch[4], packed_row[5];
    CHECK_OK(edge_linucb_update(block, 2, x, 1.0, scratch, packed_row));
    const double want_block[6] = {0.3, 0.4, 0.82, -0.24, -0.24, 0.68};
    const double want_packed[5] = {0.3, 0.4, 0.82, -0.24, 0.68};
    for (int k = 0; k < 6; k++)
        EXPECT(close_to(block[k], want_block[k]), "block[%d] = %g, expected %g", k, block[k],
               want_block[k]);
    for (int k = 0; k < 5; k++)
        EXPECT(close_to(packed_row[k], want_packed[k]), "packed[%d] = %g, expected %g", k,
               packed_row[k], want_packed[k]);
    /* A^-1 = -I: 1 + x'A^-1x = 0, refused, and the block is left as it was. */
    double negative[6] = {0.5, 0.5, -1.0, 0.0, 0.0, -1.0};
    EXPECT_RC(edge_linucb_update(negative, 2, x, 1.0, scratch, NULL), EDGE_ERR_INVALID);
    EXPECT(negative[0] == 0.5 && negative[2] == -1.0 && negative[5] == -1.0,
           "a refused update changed the block");
    EXPECT_RC(edge_linucb_update(block, 0, x, 1.0, scratch, NULL), EDGE_ERR_INVALID);
    EXPECT_RC(edge_linucb_update(block, 2, x, 1.0, NULL, NULL), EDGE_ERR_INVALID);

    cur_test = "paging_penalty";
    const double charge[3] = {1.0, 2.0, 3.0}, share[3] = {0.5, 0.25, 0.0};
    const double extra[3] = {0.1, 0.2, 0.3};
    const uint8_t resident[3] = {0, 1, 0};
    double out[3];
    CHECK_OK(edge_paging_penalty(3, charge, share, 2.0, extra, resident, out));
    EXPECT(close_to(out[0], 1.0 / 2.0 + 0.1) && out[1] == 0.0 && close_to(out[2], 3.0 + 0.3),
           "penalty %g %g %g, expected 0.6 0 3.3", out[0], out[1], out[2]);
    CHECK_OK(edge_paging_penalty(3, charge, share, 0.0, NULL, resident, out));
    EXPECT(out[0] == 1.0 && out[1] == 0.0 && out[2] == 3.0, "left 0: %g %g %g", out[0], out[1],
           out[2]);
    EXPECT_RC(edge_paging_penalty(3, charge, share, -1.0, NULL, resident, out), EDGE_ERR_INVALID);
    EXPECT_RC(edge_paging_penalty(3, charge, NULL, 0.0, NULL, resident, out), EDGE_ERR_INVALID);
}

/* edge_learned_inputs on a row worked by hand: log1p(e - 1) = 1, a negative clipped to 0, the
 * load cost 0.001 s = 1 ms -> log1p(1) = ln 2, and the three cache-level columns copied. */
static void test_learned_inputs(void) {
    cur_test = "learned_inputs";
    const float e1 = (float)expm1(1.0);  /* e - 1 */
    const float features[2][EDGE_N_FEATURES] = {{0.0f, e1, -5.0f, e1, 0.001f, 0.0f, e1, 0.0f},
                                                {e1, 0.0f, 0.0f, 0.0f, 0.0f, e1, 0.0f, e1}};
    float out[2][EDGE_N_LEARNED_INPUTS];
    CHECK_OK(edge_learned_inputs(&features[0][0], 2, 0.5f, 0.25f, 0.125f, &out[0][0]));
    const float ln2 = (float)log(2.0);
    const float want[2][EDGE_N_LEARNED_INPUTS] = {
        {0.0f, 1.0f, 0.0f, 1.0f, ln2, 0.0f, 1.0f, 0.0f, 0.5f, 0.25f, 0.125f},
        {1.0f, 0.0f, 0.0f, 0.0f, 0.0f, 1.0f, 0.0f, 1.0f, 0.5f, 0.25f, 0.125f}};
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < EDGE_N_LEARNED_INPUTS; k++)
            EXPECT(closef(out[i][k], want[i][k]), "row %d column %d = %g, expected %g", i, k,
                   out[i][k], want[i][k]);
    CHECK_OK(edge_learned_inputs(NULL, 0, 0.0f, 0.0f, 0.0f, NULL));
    EXPECT_RC(edge_learned_inputs(NULL, 1, 0.0f, 0.0f, 0.0f, &out[0][0]), EDGE_ERR_INVALID);
}

/* edge_learned_rank worked by hand: preferences (evict - keep) 1, 3, 1, -2, 3 for labels
 * 10..14 rank 11, 14 (3 twice, row order), 10, 12 (1 twice), 13; a NaN or an infinity is refused.
 * Then 300 rows (past the stack's 128: the merge sort path) in blocks of equal preference, checked
 * against the order they were built in. */
static void test_learned_rank(void) {
    cur_test = "learned_rank";
    const float q[5][2] = {{0.0f, 1.0f}, {-1.0f, 2.0f}, {2.0f, 3.0f}, {2.0f, 0.0f}, {0.5f, 3.5f}};
    const int32_t labels[5] = {10, 11, 12, 13, 14};
    const int32_t want[5] = {11, 14, 10, 12, 13};
    int32_t out[5];
    CHECK_OK(edge_learned_rank(&q[0][0], 5, labels, out));
    for (int i = 0; i < 5; i++)
        EXPECT(out[i] == want[i], "rank %d = %d, expected %d", i, out[i], want[i]);
    CHECK_OK(edge_learned_rank(NULL, 0, NULL, NULL));
    EXPECT_RC(edge_learned_rank(NULL, 1, labels, out), EDGE_ERR_INVALID);
    float bad[2][2] = {{0.0f, 1.0f}, {0.0f, NAN}};
    EXPECT_RC(edge_learned_rank(&bad[0][0], 2, labels, out), EDGE_ERR_INVALID);
    bad[1][1] = INFINITY;
    EXPECT_RC(edge_learned_rank(&bad[0][0], 2, labels, out), EDGE_ERR_INVALID);

    enum { N = 300 };
    static float many[N][2];
    static int32_t ids[N], ranked[N];
    for (int i = 0; i < N; i++) {
        /* row i has preference -(i % 30): the best block is rows 0, 30, 60, ..., then 1, 31, .. */
        many[i][EDGE_Q_KEEP] = (float)(i % 30);
        many[i][EDGE_Q_EVICT] = 0.0f;
        ids[i] = 1000 + i;
    }
    CHECK_OK(edge_learned_rank(&many[0][0], N, ids, ranked));
    for (int r = 0; r < N; r++) {
        int want_row = (r % 10) * 30 + r / 10;
        EXPECT(ranked[r] == 1000 + want_row, "rank %d of %d = %d, expected %d", r, N, ranked[r],
               1000 + want_row);
    }
}

/* expected[*want..] gets the slots of src not yet in expected[0..*want). */
static void expect_new(int32_t *expected, uint32_t *want, const int32_t *src, uint32_t m) {
    for (uint32_t i = 0; i < m; i++) {
        int listed = 0;
        for (uint32_t t = 0; t < *want; t++) listed |= expected[t] == src[i];
        if (!listed) expected[(*want)++] = src[i];
    }
}

/* edge_index_candidates(k_tail, k_head, k_rand, seed) leaves the index unchanged and gives, by
 * definition, the unpinned LRU tail, then the MRU head's and the seeded draw's slots not listed
 * before, in order; `got` (room for k_tail + k_head + k_rand) receives them, *n their count. */
static void expect_candidates_by_definition(edge_index *idx, uint32_t k_tail, uint32_t k_head,
                                            uint32_t k_rand, uint64_t seed, int32_t *got,
                                            uint32_t *n) {
    uint32_t room = k_tail + k_head + k_rand + 1;
    int32_t *tail = malloc(room * sizeof *tail), *head = malloc(room * sizeof *head),
            *drawn = malloc(room * sizeof *drawn), *expected = malloc(room * sizeof *expected);
    EXPECT(tail && head && drawn && expected, "out of memory");
    if (!tail || !head || !drawn || !expected)
        goto done;
    uint32_t n_tail = 0, n_head = 0, n_drawn = 0, want = 0;
    *n = 0;
    SNAPSHOT(idx);
    CHECK_OK(edge_index_candidates(idx, k_tail, k_head, k_rand, seed, got, n));
    EXPECT_UNCHANGED(idx, "candidates");
    CHECK_OK(edge_index_walk_lru(idx, k_tail, 1, tail, &n_tail));
    CHECK_OK(edge_index_walk_mru(idx, k_head, 1, head, &n_head));
    CHECK_OK(edge_index_sample_unpinned_seeded(idx, seed, k_rand, drawn, &n_drawn));
    expect_new(expected, &want, tail, n_tail);
    expect_new(expected, &want, head, n_head);
    expect_new(expected, &want, drawn, n_drawn);
    EXPECT(*n == want && memcmp(got, expected, *n * sizeof(got[0])) == 0,
           "candidates(%u, %u, %u): %u slots, expected %u", k_tail, k_head, k_rand, *n, want);
done:
    free(tail);
    free(head);
    free(drawn);
    free(expected);
}

static void test_candidates(void) {
    cur_test = "candidates";
    enum { N = 12 };
    edge_index *idx = new_index(N, 7);
    for (uint32_t k = 0; k < N; k++) /* key 0 (LRU end) and key N - 1 (MRU end) pinned */
        insert_key(idx, k, 1, 0.0, k == 0 || k == N - 1 ? 1 : 0);
    for (uint32_t k = 1; k < N; k += 2) { /* odd keys get a demand of k / 8, even ones keep 0 */
        int32_t slot;
        CHECK_OK(edge_index_lookup(idx, k, &slot));
        CHECK_OK(edge_index_set_demand(idx, slot, (float)k / 8.0f));
    }
    int32_t mru[N];
    uint32_t n_mru = 0;
    CHECK_OK(edge_index_walk_mru(idx, 3, 1, mru, &n_mru));
    EXPECT(n_mru == 3 && info_of(idx, mru[0]).key == N - 2 && info_of(idx, mru[2]).key == N - 4,
           "walk_mru: %u slots, first key %llu", n_mru,
           (unsigned long long)info_of(idx, mru[0]).key);
    CHECK_OK(edge_index_walk_mru(idx, 1, 0, mru, &n_mru)); /* pinned ones included */
    EXPECT(n_mru == 1 && info_of(idx, mru[0]).key == N - 1, "walk_mru with pinned keys");
    for (uint32_t k_tail = 0; k_tail <= 4; k_tail += 2) {
        for (uint32_t k_head = 0; k_head <= N; k_head += 3) {
            for (uint32_t k_rand = 0; k_rand <= N + 2; k_rand += 5) {
                int32_t got[3 * N + 4];
                uint32_t n = 0;
                expect_candidates_by_definition(idx, k_tail, k_head, k_rand, 99, got, &n);
                for (uint32_t i = 0; i < n; i++) {
                    EXPECT(pins_of(idx, got[i]) == 0, "candidate %d is pinned", got[i]);
                    for (uint32_t j = 0; j < i; j++)
                        EXPECT(got[i] != got[j], "candidate repeated");
                }
                float inputs[(3 * N + 4) * EDGE_N_LEARNED_INPUTS];
                int32_t slots[3 * N + 4];
                uint32_t m = 0;
                CHECK_OK(edge_learned_decision_inputs(idx, k_tail, k_head, k_rand, 99, 5.0,
                                                      0.5f, 0.25f, slots, inputs, &m));
                EXPECT(m == n && memcmp(slots, got, n * sizeof(got[0])) == 0,
                       "decision inputs' slots differ from the candidates");
                for (uint32_t i = 0; i < m; i++) {
                    float row[EDGE_N_FEATURES], x[EDGE_N_LEARNED_INPUTS];
                    CHECK_OK(edge_index_features(idx, &slots[i], 1, 5.0, row));
                    uint64_t key = info_of(idx, slots[i]).key;
                    float demand = key % 2 ? (float)key / 8.0f : 0.0f;
                    CHECK_OK(edge_learned_inputs(row, 1, demand, 0.5f, 0.25f, x));
                    EXPECT(memcmp(x, inputs + i * EDGE_N_LEARNED_INPUTS, sizeof(x)) == 0,
                           "decision input row %u (key %llu) differs", i,
                           (unsigned long long)key);
                }
            }
        }
    }
    uint32_t n = 0;
    EXPECT_RC(edge_index_candidates(idx, 1, 0, 1, 0, NULL, &n), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_candidates(idx, 0, 1, 0, 0, NULL, &n), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_candidates(NULL, 1, 0, 1, 0, (int32_t[2]){0}, &n), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_walk_mru(NULL, 1, 1, mru, &n), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_walk_mru(idx, 1, 1, NULL, &n), EDGE_ERR_INVALID);
    /* Demand: finite and >= 0 on a resident slot, else refused and left as it was; a key
     * inserted again starts at 0. */
    int32_t slot;
    CHECK_OK(edge_index_lookup(idx, 3, &slot));
    EXPECT_RC(edge_index_set_demand(idx, slot, -0.5f), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_set_demand(idx, slot, NAN), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_set_demand(idx, slot, INFINITY), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_set_demand(idx, N + 5, 1.0f), EDGE_ERR_INVALID);
    EXPECT_RC(edge_index_set_demand(NULL, slot, 1.0f), EDGE_ERR_INVALID);
    EXPECT(info_of(idx, slot).demand == 3.0f / 8.0f, "a refused demand changed the slot");
    CHECK_OK(edge_index_remove(idx, 3));
    insert_key(idx, 3, 1, 0.0, 0);
    CHECK_OK(edge_index_lookup(idx, 3, &slot));
    EXPECT(info_of(idx, slot).demand == 0.0f, "a key inserted again kept its old demand");
    CHECK_OK(edge_index_free(idx));
}

/* Past the slot set's stack (SLOT_SET_ON_STACK entries, 256 members): draws of 200 and 400
 * of 916 unpinned slots (of 1,000; every 12th pinned) are distinct, unpinned and as many as
 * asked, and the candidates (tail 40, head 60, draw 400: 500 asked, on the heap) are still the
 * tail, then the head's and the draw's slots not listed before, in order. */
static void test_candidates_at_scale(void) {
    cur_test = "candidates_at_scale";
    enum { N = 1000, K_TAIL = 40, K_HEAD = 60, K_RAND = 400 };
    edge_index *idx = new_index(16, 3);
    for (uint32_t k = 0; k < N; k++)
        insert_key(idx, k, 1, 0.0, k % 12 == 0 ? 1 : 0);
    static int32_t drawn[K_RAND], got[K_TAIL + K_HEAD + K_RAND];
    static uint8_t seen[N];
    const uint32_t sizes[2] = {200, K_RAND};
    for (int t = 0; t < 2; t++) {
        uint32_t m = 0;
        CHECK_OK(edge_index_sample_unpinned_seeded(idx, 5 + t, sizes[t], drawn, &m));
        EXPECT(m == sizes[t], "draw of %u gave %u slots", sizes[t], m);
        memset(seen, 0, sizeof seen);
        for (uint32_t i = 0; i < m; i++) {
            uint64_t key = info_of(idx, drawn[i]).key;
            EXPECT(key % 12 != 0, "drawn key %llu is pinned", (unsigned long long)key);
            EXPECT(!seen[key], "key %llu drawn twice", (unsigned long long)key);
            seen[key] = 1;
        }
    }
    uint32_t n = 0;
    expect_candidates_by_definition(idx, K_TAIL, K_HEAD, K_RAND, 11, got, &n);
    EXPECT(n > K_TAIL + K_HEAD && n < K_TAIL + K_HEAD + K_RAND,
           "the draw overlapped nothing or everything (%u of %u): the case tests too little",
           n, K_TAIL + K_HEAD + K_RAND);
    CHECK_OK(edge_index_free(idx));
}

static void test_stack_hists(void) {
    cur_test = "stack_hists";
    /* LFU over the uses 0 1 0 2 1, capacities up to 2, priority (count << 40) | time. By hand:
     * 0 and 1 fill free slots (depths 0 and 1), 0 hits at depth 1, 2 is a first use with both
     * slots taken (depth 2: a miss), evicting 1 (count 1 < 2), so 1 then misses (depth 2). At
     * capacity 1 only the first use hits. */
    const int32_t uses[5] = {0, 1, 0, 2, 1};
    const int64_t one = (int64_t)1 << 40, two = (int64_t)2 << 40;
    const int64_t after[5] = {one | 1, one | 2, two | 3, one | 4, two | 5};
    uint64_t hist[3];
    CHECK_OK(edge_priority_stack_hist(uses, after, 5, 3, 2, hist));
    EXPECT(hist[0] == 1 && hist[1] == 2 && hist[2] == 2, "lfu hist %llu %llu %llu, expected 1 2 2",
           (unsigned long long)hist[0], (unsigned long long)hist[1],
           (unsigned long long)hist[2]);
    /* The same experts as tokens of top-1, lookahead m = 2: at token 3 (expert 2) the window
     * holds tokens 3 and 4 (2, then 1), so 0 (no use ahead) goes and token 4's 1 hits. */
    CHECK_OK(edge_lookahead_stack_hist(uses, 5, 1, 3, 2, 2, hist));
    EXPECT(hist[0] == 1 && hist[1] == 3 && hist[2] == 1, "sch hist %llu %llu %llu, expected 1 3 1",
           (unsigned long long)hist[0], (unsigned long long)hist[1],
           (unsigned long long)hist[2]);
    const int32_t bad[2] = {0, 3};
    EXPECT_RC(edge_priority_stack_hist(bad, after, 2, 3, 2, hist), EDGE_ERR_INVALID);
    EXPECT_RC(edge_lookahead_stack_hist(bad, 2, 1, 3, 2, 2, hist), EDGE_ERR_INVALID);
    EXPECT_RC(edge_priority_stack_hist(uses, after, 5, 3, 0, hist), EDGE_ERR_INVALID);
    EXPECT_RC(edge_lookahead_stack_hist(uses, 5, 1, 3, 0, 2, hist), EDGE_ERR_INVALID);
    EXPECT_RC(edge_priority_stack_hist(NULL, NULL, 1, 3, 2, hist), EDGE_ERR_INVALID);
    CHECK_OK(edge_priority_stack_hist(NULL, NULL, 0, 3, 2, hist));
    EXPECT(hist[0] == 0 && hist[1] == 0 && hist[2] == 0, "an empty trace counts nothing");
}

int main(void) {
    test_status_names();
    test_init_and_free();
    test_single_key_ops();
    test_ghost_list();
    test_invalid_slots();
    test_null_pointers();
    test_pin_count_overflow();
    test_empty_batches();
    test_batch_semantics();
    test_sampling();
    test_seeded_sampling();
    test_full_index();
    test_replay_golden();
    test_hash_ngrams();
    test_hash_features_ascii();
    test_linucb_scores();
    test_learned_inputs();
    test_learned_rank();
    test_candidates();
    test_candidates_at_scale();
    test_stack_hists();
    if (failures) {
        fprintf(stderr, "%d failures in the directed tests\n", failures);
        return 1;
    }
    random_run();
    if (failures) {
        fprintf(stderr, "%d failures\n", failures);
        return 1;
    }
    return 0;
}
