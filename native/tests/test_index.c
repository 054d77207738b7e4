/*
 * Randomised exercise of the C index against a tiny reference model, run under
 * AddressSanitizer + UBSan (make -C native sanitize). Every step is followed by
 * edge_index_verify; any mismatch or sanitizer report fails the run.
 */
#include "edge.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEYS 512
#define STEPS 200000

static int failures = 0;
#define EXPECT(cond, ...)                                                                        \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            fprintf(stderr, "FAIL line %d: ", __LINE__);                                         \
            fprintf(stderr, __VA_ARGS__);                                                        \
            fprintf(stderr, "\n");                                                               \
            if (++failures > 10) exit(1);                                                        \
        }                                                                                        \
    } while (0)

static uint64_t rng_state = 12345;
static uint64_t next_rand(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Reference model: which keys are resident, their size and pins. */
static int resident[KEYS];
static uint64_t sizes[KEYS];
static uint32_t pins[KEYS];

int main(void) {
    edge_index *idx = NULL;
    EXPECT(edge_index_init(&idx, 1, 7) == EDGE_OK, "init");
    EXPECT(edge_index_init(NULL, 1, 7) == EDGE_ERR_INVALID, "init NULL");
    EXPECT(strcmp(edge_status_str(EDGE_ERR_BUSY), "unknown status") != 0, "status names");
    int32_t slots[64];
    float feats[64 * EDGE_N_FEATURES];
    uint64_t keys[64];
    uint32_t n = 0;
    for (int step = 0; step < STEPS; step++) {
        uint64_t key = next_rand() % KEYS;
        int32_t slot = -1;
        int op = (int)(next_rand() % 10);
        double now = (double)step;
        switch (op) {
        case 0:
        case 1: { /* insert */
            uint64_t size = 1 + next_rand() % 4096;
            int rc = edge_index_insert(idx, key, size, 0.5, now, 0, &slot);
            if (resident[key]) {
                EXPECT(rc == EDGE_ERR_EXISTS, "insert existing key %llu rc=%d",
                       (unsigned long long)key, rc);
            } else {
                EXPECT(rc == EDGE_OK && slot >= 0, "insert rc=%d", rc);
                resident[key] = 1;
                sizes[key] = size;
            }
            break;
        }
        case 2: { /* remove */
            int rc = edge_index_remove(idx, key);
            if (!resident[key]) EXPECT(rc == EDGE_ERR_NOT_FOUND, "remove absent rc=%d", rc);
            else if (pins[key]) EXPECT(rc == EDGE_ERR_BUSY, "remove pinned rc=%d", rc);
            else {
                EXPECT(rc == EDGE_OK, "remove rc=%d", rc);
                resident[key] = 0;
            }
            break;
        }
        case 3: { /* acquire (touch + pin) */
            int rc = edge_index_acquire(idx, key, now, &slot);
            EXPECT((rc == EDGE_OK) == (resident[key] != 0), "acquire rc=%d", rc);
            if (rc == EDGE_OK) pins[key]++;
            break;
        }
        case 4: { /* unpin */
            int rc = edge_index_lookup(idx, key, &slot);
            if (rc == EDGE_OK) {
                rc = edge_index_unpin(idx, slot);
                if (pins[key]) {
                    EXPECT(rc == EDGE_OK, "unpin rc=%d", rc);
                    pins[key]--;
                } else {
                    EXPECT(rc == EDGE_ERR_BUSY, "unpin of unpinned rc=%d", rc);
                }
            }
            break;
        }
        case 5: { /* walk + features of the LRU candidates */
            uint32_t k = (uint32_t)(next_rand() % 64);
            EXPECT(edge_index_walk_lru(idx, k, 1, slots, &n) == EDGE_OK, "walk");
            EXPECT(n <= k, "walk returned too many");
            for (uint32_t i = 0; i < n; i++) {
                edge_slot_info info;
                EXPECT(edge_index_slot_info(idx, slots[i], &info) == EDGE_OK, "slot info");
                EXPECT(info.pin_count == 0, "walk returned a pinned slot");
            }
            EXPECT(edge_index_features(idx, slots, n, now, feats) == EDGE_OK, "features");
            for (uint32_t i = 0; i < n; i++)
                EXPECT(feats[i * EDGE_N_FEATURES + EDGE_FEAT_AGE] >= 0, "negative age %f step %d", feats[i * EDGE_N_FEATURES + EDGE_FEAT_AGE], step);
            break;
        }
        case 6: { /* uniform sample of unpinned slots */
            uint32_t k = (uint32_t)(next_rand() % 64);
            EXPECT(edge_index_sample_unpinned(idx, k, slots, &n) == EDGE_OK, "sample");
            for (uint32_t i = 0; i < n; i++) {
                edge_slot_info info;
                EXPECT(edge_index_slot_info(idx, slots[i], &info) == EDGE_OK, "sample slot");
                EXPECT(info.pin_count == 0, "sample returned a pinned slot");
                for (uint32_t j = 0; j < i; j++) EXPECT(slots[i] != slots[j], "repeat in sample");
            }
            break;
        }
        case 7: { /* batch lookup and touch */
            uint32_t m = (uint32_t)(next_rand() % 64), expect = 0, found = 0;
            for (uint32_t i = 0; i < m; i++) {
                keys[i] = next_rand() % (KEYS + 64); /* some keys never exist */
                expect += keys[i] < KEYS && resident[keys[i]];
            }
            EXPECT(edge_index_lookup_many(idx, keys, m, slots, &found) == EDGE_OK, "lookup_many");
            EXPECT(found == expect, "lookup_many found %u expected %u", found, expect);
            EXPECT(edge_index_touch_many(idx, keys, m, now, slots, &found) == EDGE_OK, "touch_many");
            EXPECT(found == expect, "touch_many found %u expected %u", found, expect);
            break;
        }
        case 8: { /* short replay on top of the current state, budget above pinned bytes */
            edge_index_totals t;
            edge_index_totals_get(idx, &t);
            uint64_t rk[32], rs[32], hits, bh, ev, done;
            double times[32];
            uint8_t hit_flags[32];
            for (int i = 0; i < 32; i++) {
                rk[i] = next_rand() % KEYS;
                times[i] = now;
                rs[i] = resident[rk[i]] ? sizes[rk[i]] : 1 + next_rand() % 4096;
            }
            uint64_t budget = t.pinned_bytes + 64 * 4096;
            int rc = edge_index_replay(idx, (int)(next_rand() % 2), rk, rs, times, 32, budget,
                                       hit_flags, &hits, &bh, &ev, &done);
            EXPECT(rc == EDGE_OK && done == 32, "replay rc=%d done=%llu", rc,
                   (unsigned long long)done);
            /* Resync the model: replay inserts and evicts unpinned keys. */
            for (int i = 0; i < KEYS; i++) {
                int32_t s;
                int present = edge_index_lookup(idx, (uint64_t)i, &s) == EDGE_OK;
                if (present && !resident[i]) {
                    edge_slot_info info;
                    edge_index_slot_info(idx, s, &info);
                    sizes[i] = info.size;
                }
                if (!present) EXPECT(pins[i] == 0, "replay evicted a pinned key");
                resident[i] = present;
            }
            edge_index_totals_get(idx, &t);
            EXPECT(t.bytes <= budget, "replay exceeded its budget");
            break;
        }
        default: { /* touch */
            int rc = edge_index_touch(idx, key, now, &slot);
            EXPECT((rc == EDGE_OK) == (resident[key] != 0), "touch rc=%d", rc);
        }
        }
        int vrc = edge_index_verify(idx);
        EXPECT(vrc == EDGE_OK, "verify failed at step %d op %d", step, op);
    }
    /* Model totals agree with the index. */
    edge_index_totals t;
    edge_index_totals_get(idx, &t);
    uint64_t bytes = 0;
    uint32_t count = 0;
    for (int i = 0; i < KEYS; i++) {
        if (resident[i]) {
            count++;
            bytes += sizes[i];
        }
    }
    EXPECT(t.count == count && t.bytes == bytes, "totals %u/%llu vs model %u/%llu", t.count,
           (unsigned long long)t.bytes, count, (unsigned long long)bytes);
    EXPECT(edge_index_free(idx) == EDGE_OK, "free");
    EXPECT(edge_index_free(NULL) == EDGE_OK, "free NULL");
    if (failures) {
        fprintf(stderr, "%d failures\n", failures);
        return 1;
    }
    printf("test_index: %d steps ok (final: %u keys, %llu bytes)\n", STEPS, count,
           (unsigned long long)bytes);
    return 0;
}
