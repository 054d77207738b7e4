/*
 * hashing.c - signed feature hashing of word and character n-grams (the router's "hashing"
 * feature extractor, edge/router/features.py).
 *
 * The grams, their byte encoding and the hash are exactly those of the extractor's definition
 * (a gram is the UTF-8 of "w<n>\x1f" + the n words joined by \x1f, or "c<n>\x1f" + n code points
 * of the padded text; its hash is zlib's CRC-32 continued from the seed), so a router state
 * learned before this kernel existed keeps its meaning. CRC-32 is computed here with the
 * standard reflected table (polynomial 0xEDB88320), the one zlib uses.
 */
#include "edge.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static uint32_t crc_table[256];
static int crc_table_ready;

static void crc_table_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
    crc_table_ready = 1;
}

/* Continues a CRC-32 (zlib's crc32(crc, buf, len): the pre- and post-inversion included). */
static uint32_t crc32_continue(uint32_t crc, const uint8_t *buf, size_t len) {
    crc = ~crc;
    for (size_t i = 0; i < len; i++)
        crc = crc_table[(crc ^ buf[i]) & 0xFFu] ^ (crc >> 8);
    return ~crc;
}

static void add_gram(uint32_t hash, double *out, uint32_t n_buckets) {
    uint32_t bucket = (hash & 0x7FFFFFFFu) % n_buckets;
    out[bucket] += (hash >> 31) ? -1.0 : 1.0;
}

/* "<kind><n>\x1f" into buf (at most 13 bytes); its length. */
static size_t gram_prefix(char kind, uint32_t n, uint8_t *buf) {
    char text[16];
    int len = snprintf(text, sizeof text, "%c%u\x1f", kind, (unsigned)n);
    for (int i = 0; i < len; i++)
        buf[i] = (uint8_t)text[i];
    return (size_t)len;
}

static int check_ngrams(const uint32_t *word_ngrams, uint32_t n_word_ngrams,
                        const uint32_t *char_ngrams, uint32_t n_char_ngrams) {
    if ((n_word_ngrams && !word_ngrams) || (n_char_ngrams && !char_ngrams))
        return EDGE_ERR_INVALID;
    for (uint32_t j = 0; j < n_word_ngrams; j++)
        if (word_ngrams[j] == 0)
            return EDGE_ERR_INVALID;
    for (uint32_t j = 0; j < n_char_ngrams; j++)
        if (char_ngrams[j] == 0)
            return EDGE_ERR_INVALID;
    return EDGE_OK;
}

/* edge_hash_ngrams after its checks. */
static void hash_ngrams(const uint8_t *words, size_t words_len, const uint8_t *padded,
                        size_t padded_len, const uint32_t *word_ngrams, uint32_t n_word_ngrams,
                        const uint32_t *char_ngrams, uint32_t n_char_ngrams, uint32_t seed,
                        int normalise, double *out, uint32_t n_buckets, uint32_t *n_grams) {
    if (!crc_table_ready)
        crc_table_init(); /* idempotent: a race writes the same table twice */
    for (uint32_t b = 0; b < n_buckets; b++)
        out[b] = 0.0;
    uint32_t grams = 0;
    uint8_t prefix[16];

    /* Word n-grams: words[i:i+n] joined by 0x1F is one byte span of the joined words, from
     * the start of word i to the end of word i+n-1; the window slides one word at a time. */
    size_t n_words = words_len > 0;
    for (size_t i = 0; i < words_len; i++)
        n_words += words[i] == 0x1Fu;
    for (uint32_t j = 0; j < n_word_ngrams; j++) {
        uint32_t n = word_ngrams[j];
        if (n > n_words)
            continue;
        uint32_t seed_crc = crc32_continue(seed, prefix, gram_prefix('w', n, prefix));
        size_t first = 0, end = 0;
        for (uint32_t k = 0; k < n; k++) { /* end of the n-th word */
            if (k > 0)
                end++; /* over the separator */
            while (end < words_len && words[end] != 0x1Fu)
                end++;
        }
        while (1) {
            add_gram(crc32_continue(seed_crc, words + first, end - first), out, n_buckets);
            grams++;
            if (end >= words_len)
                break;
            while (words[first] != 0x1Fu) /* drop the first word */
                first++;
            first++;
            end++; /* take the next one */
            while (end < words_len && words[end] != 0x1Fu)
                end++;
        }
    }

    /* Character n-grams over code points: a UTF-8 code point starts at every byte that is not
     * a continuation byte (10xxxxxx). */
    for (uint32_t j = 0; j < n_char_ngrams; j++) {
        uint32_t n = char_ngrams[j];
        uint32_t seed_crc = crc32_continue(seed, prefix, gram_prefix('c', n, prefix));
        size_t start = 0, end = 0;
        uint32_t in_window = 0;
        while (in_window < n && end < padded_len) { /* the first n code points */
            end++;
            while (end < padded_len && (padded[end] & 0xC0u) == 0x80u)
                end++;
            in_window++;
        }
        if (in_window < n)
            continue; /* fewer than n code points: no gram */
        while (1) {
            add_gram(crc32_continue(seed_crc, padded + start, end - start), out, n_buckets);
            grams++;
            if (end >= padded_len)
                break;
            start++; /* slide by one code point at both ends */
            while ((padded[start] & 0xC0u) == 0x80u)
                start++;
            end++;
            while (end < padded_len && (padded[end] & 0xC0u) == 0x80u)
                end++;
        }
    }
    if (normalise) {
        /* The counts are small integers: their sum of squares is exact, so this equals numpy's
         * counts / sqrt(counts @ counts) bit for bit. */
        double sum_sq = 0.0;
        for (uint32_t b = 0; b < n_buckets; b++)
            sum_sq += out[b] * out[b];
        if (sum_sq > 0.0) {
            double norm = sqrt(sum_sq);
            for (uint32_t b = 0; b < n_buckets; b++)
                out[b] /= norm;
        }
    }
    *n_grams = grams;
}

int edge_hash_ngrams(const uint8_t *words, size_t words_len, const uint8_t *padded,
                     size_t padded_len, const uint32_t *word_ngrams, uint32_t n_word_ngrams,
                     const uint32_t *char_ngrams, uint32_t n_char_ngrams, uint32_t seed,
                     int normalise, double *out, uint32_t n_buckets, uint32_t *n_grams) {
    if ((words_len && !words) || (padded_len && !padded) || !out || n_buckets == 0 || !n_grams)
        return EDGE_ERR_INVALID;
    int status = check_ngrams(word_ngrams, n_word_ngrams, char_ngrams, n_char_ngrams);
    if (status != EDGE_OK)
        return status;
    hash_ngrams(words, words_len, padded, padded_len, word_ngrams, n_word_ngrams, char_ngrams,
                n_char_ngrams, seed, normalise, out, n_buckets, n_grams);
    return EDGE_OK;
}

/* Python's \w and str methods, restricted to ASCII. */
static int is_word(uint8_t c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
static int is_space(uint8_t c) { /* str.isspace: \t \n \v \f \r, 0x1C-0x1F and the space */
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20);
}

int edge_hash_features_ascii(const uint8_t *text, size_t len, int lowercase,
                             const uint32_t *word_ngrams, uint32_t n_word_ngrams,
                             const uint32_t *char_ngrams, uint32_t n_char_ngrams, uint32_t seed,
                             double shape_weight, double *out, uint32_t dim,
                             uint32_t *n_grams) {
    if ((len && !text) || !out || dim <= EDGE_N_SHAPE_FEATURES || !n_grams)
        return EDGE_ERR_INVALID;
    int status = check_ngrams(word_ngrams, n_word_ngrams, char_ngrams, n_char_ngrams);
    if (status != EDGE_OK)
        return status;
    for (size_t i = 0; i < len; i++)
        if (text[i] >= 0x80u)
            return EDGE_ERR_INVALID;
    /* The words joined by 0x1F (at most len bytes) and the padded text (at most len + 2). */
    uint8_t *words = malloc(2 * len + 2);
    if (!words)
        return EDGE_ERR_NOMEM;
    uint8_t *padded = words + len;
    size_t words_len = 0, padded_len = 0;
    uint64_t n_words = 0, digits = 0, upper = 0, alnum = 0, space = 0, lines = 0;
    padded[padded_len++] = ' ';
    for (size_t i = 0; i < len;) {
        if (!is_word(text[i])) {
            uint8_t c = text[i++];
            space += is_space(c);
            lines += c == '\n';
            continue;
        }
        if (n_words++ > 0) {
            words[words_len++] = 0x1Fu;
            padded[padded_len++] = ' ';
        }
        for (; i < len && is_word(text[i]); i++) {
            uint8_t c = text[i];
            int is_upper = c >= 'A' && c <= 'Z';
            digits += c >= '0' && c <= '9';
            upper += is_upper;
            alnum += c != '_';
            if (lowercase && is_upper)
                c = (uint8_t)(c - 'A' + 'a');
            words[words_len++] = c;
            padded[padded_len++] = c;
        }
    }
    padded[padded_len++] = ' ';
    uint32_t n_buckets = dim - EDGE_N_SHAPE_FEATURES;
    hash_ngrams(words, words_len, padded, padded_len, word_ngrams, n_word_ngrams, char_ngrams,
                n_char_ngrams, seed, 1, out, n_buckets, n_grams);
    free(words);

    /* The shape block, each value as edge/router/features.py's _shape computes it. */
    double *shape = out + n_buckets, w = shape_weight, n = (double)len;
    shape[0] = w;
    if (len == 0) {
        for (int k = 1; k < EDGE_N_SHAPE_FEATURES; k++)
            shape[k] = 0.0;
    } else {
        double punct = n - (double)alnum - (double)space;
        shape[1] = w * (log1p(n) / log1p(4096.0));
        shape[2] = w * (log1p((double)n_words) / log1p(1024.0));
        shape[3] = w * ((double)digits / n);
        shape[4] = w * ((double)upper / n);
        shape[5] = w * (punct / n);
        shape[6] = w * fmin(1.0, 20.0 * (double)lines / n);
    }
    double sum_sq = 0.0;
    for (uint32_t k = 0; k < dim; k++)
        sum_sq += out[k] * out[k];
    double norm = sqrt(sum_sq); /* never 0: the bias */
    for (uint32_t k = 0; k < dim; k++)
        out[k] /= norm;
    return EDGE_OK;
}
