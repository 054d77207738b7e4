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

/* The reflected CRC-32 table of polynomial 0xEDB88320 (zlib's), written out: a table filled
 * on first use behind a flag would race between threads (cffi calls run without the GIL), and
 * on a weakly ordered CPU another thread could see the flag before the entries. */
static const uint32_t crc_table[256] = {
    0x00000000u, 0x77073096u, 0xEE0E612Cu, 0x990951BAu, 0x076DC419u, 0x706AF48Fu,
    0xE963A535u, 0x9E6495A3u, 0x0EDB8832u, 0x79DCB8A4u, 0xE0D5E91Eu, 0x97D2D988u,
    0x09B64C2Bu, 0x7EB17CBDu, 0xE7B82D07u, 0x90BF1D91u, 0x1DB71064u, 0x6AB020F2u,
    0xF3B97148u, 0x84BE41DEu, 0x1ADAD47Du, 0x6DDDE4EBu, 0xF4D4B551u, 0x83D385C7u,
    0x136C9856u, 0x646BA8C0u, 0xFD62F97Au, 0x8A65C9ECu, 0x14015C4Fu, 0x63066CD9u,
    0xFA0F3D63u, 0x8D080DF5u, 0x3B6E20C8u, 0x4C69105Eu, 0xD56041E4u, 0xA2677172u,
    0x3C03E4D1u, 0x4B04D447u, 0xD20D85FDu, 0xA50AB56Bu, 0x35B5A8FAu, 0x42B2986Cu,
    0xDBBBC9D6u, 0xACBCF940u, 0x32D86CE3u, 0x45DF5C75u, 0xDCD60DCFu, 0xABD13D59u,
    0x26D930ACu, 0x51DE003Au, 0xC8D75180u, 0xBFD06116u, 0x21B4F4B5u, 0x56B3C423u,
    0xCFBA9599u, 0xB8BDA50Fu, 0x2802B89Eu, 0x5F058808u, 0xC60CD9B2u, 0xB10BE924u,
    0x2F6F7C87u, 0x58684C11u, 0xC1611DABu, 0xB6662D3Du, 0x76DC4190u, 0x01DB7106u,
    0x98D220BCu, 0xEFD5102Au, 0x71B18589u, 0x06B6B51Fu, 0x9FBFE4A5u, 0xE8B8D433u,
    0x7807C9A2u, 0x0F00F934u, 0x9609A88Eu, 0xE10E9818u, 0x7F6A0DBBu, 0x086D3D2Du,
    0x91646C97u, 0xE6635C01u, 0x6B6B51F4u, 0x1C6C6162u, 0x856530D8u, 0xF262004Eu,
    0x6C0695EDu, 0x1B01A57Bu, 0x8208F4C1u, 0xF50FC457u, 0x65B0D9C6u, 0x12B7E950u,
    0x8BBEB8EAu, 0xFCB9887Cu, 0x62DD1DDFu, 0x15DA2D49u, 0x8CD37CF3u, 0xFBD44C65u,
    0x4DB26158u, 0x3AB551CEu, 0xA3BC0074u, 0xD4BB30E2u, 0x4ADFA541u, 0x3DD895D7u,
    0xA4D1C46Du, 0xD3D6F4FBu, 0x4369E96Au, 0x346ED9FCu, 0xAD678846u, 0xDA60B8D0u,
    0x44042D73u, 0x33031DE5u, 0xAA0A4C5Fu, 0xDD0D7CC9u, 0x5005713Cu, 0x270241AAu,
    0xBE0B1010u, 0xC90C2086u, 0x5768B525u, 0x206F85B3u, 0xB966D409u, 0xCE61E49Fu,
    0x5EDEF90Eu, 0x29D9C998u, 0xB0D09822u, 0xC7D7A8B4u, 0x59B33D17u, 0x2EB40D81u,
    0xB7BD5C3Bu, 0xC0BA6CADu, 0xEDB88320u, 0x9ABFB3B6u, 0x03B6E20Cu, 0x74B1D29Au,
    0xEAD54739u, 0x9DD277AFu, 0x04DB2615u, 0x73DC1683u, 0xE3630B12u, 0x94643B84u,
    0x0D6D6A3Eu, 0x7A6A5AA8u, 0xE40ECF0Bu, 0x9309FF9Du, 0x0A00AE27u, 0x7D079EB1u,
    0xF00F9344u, 0x8708A3D2u, 0x1E01F268u, 0x6906C2FEu, 0xF762575Du, 0x806567CBu,
    0x196C3671u, 0x6E6B06E7u, 0xFED41B76u, 0x89D32BE0u, 0x10DA7A5Au, 0x67DD4ACCu,
    0xF9B9DF6Fu, 0x8EBEEFF9u, 0x17B7BE43u, 0x60B08ED5u, 0xD6D6A3E8u, 0xA1D1937Eu,
    0x38D8C2C4u, 0x4FDFF252u, 0xD1BB67F1u, 0xA6BC5767u, 0x3FB506DDu, 0x48B2364Bu,
    0xD80D2BDAu, 0xAF0A1B4Cu, 0x36034AF6u, 0x41047A60u, 0xDF60EFC3u, 0xA867DF55u,
    0x316E8EEFu, 0x4669BE79u, 0xCB61B38Cu, 0xBC66831Au, 0x256FD2A0u, 0x5268E236u,
    0xCC0C7795u, 0xBB0B4703u, 0x220216B9u, 0x5505262Fu, 0xC5BA3BBEu, 0xB2BD0B28u,
    0x2BB45A92u, 0x5CB36A04u, 0xC2D7FFA7u, 0xB5D0CF31u, 0x2CD99E8Bu, 0x5BDEAE1Du,
    0x9B64C2B0u, 0xEC63F226u, 0x756AA39Cu, 0x026D930Au, 0x9C0906A9u, 0xEB0E363Fu,
    0x72076785u, 0x05005713u, 0x95BF4A82u, 0xE2B87A14u, 0x7BB12BAEu, 0x0CB61B38u,
    0x92D28E9Bu, 0xE5D5BE0Du, 0x7CDCEFB7u, 0x0BDBDF21u, 0x86D3D2D4u, 0xF1D4E242u,
    0x68DDB3F8u, 0x1FDA836Eu, 0x81BE16CDu, 0xF6B9265Bu, 0x6FB077E1u, 0x18B74777u,
    0x88085AE6u, 0xFF0F6A70u, 0x66063BCAu, 0x11010B5Cu, 0x8F659EFFu, 0xF862AE69u,
    0x616BFFD3u, 0x166CCF45u, 0xA00AE278u, 0xD70DD2EEu, 0x4E048354u, 0x3903B3C2u,
    0xA7672661u, 0xD06016F7u, 0x4969474Du, 0x3E6E77DBu, 0xAED16A4Au, 0xD9D65ADCu,
    0x40DF0B66u, 0x37D83BF0u, 0xA9BCAE53u, 0xDEBB9EC5u, 0x47B2CF7Fu, 0x30B5FFE9u,
    0xBDBDF21Cu, 0xCABAC28Au, 0x53B39330u, 0x24B4A3A6u, 0xBAD03605u, 0xCDD70693u,
    0x54DE5729u, 0x23D967BFu, 0xB3667A2Eu, 0xC4614AB8u, 0x5D681B02u, 0x2A6F2B94u,
    0xB40BBE37u, 0xC30C8EA1u, 0x5A05DF1Bu, 0x2D02EF8Du,
};

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
