/*
 * trailguard.detect._scan -- one pass over a CloudTrail {"Records": [...]} document.
 *
 * Why this is written by hand: the decode path must count every record, check that the text is
 * JSON, and find the few records whose eventName trailguard cares about, at close to the speed
 * of decompression (issue 6: >= 0.5 of libdeflate's speed).  The fastest libraries reachable
 * from Python build something per value: msgspec (1.3 ms per 1.2 MB file here, skipping all but
 * two fields) and pysimdjson (1.0 ms: it copies every string into its tape) are both slower than
 * the gunzip itself (0.6-0.87 ms).  No library offers "validate, count the array's elements and show
 * me one key's value per element" without building values.  This scanner does that in one pass
 * of 64-byte blocks (AVX2 where the CPU has it, the same masks byte by byte elsewhere) in the
 * style of simdjson's first stage: bit masks of quotes, backslashes, whitespace and operators;
 * string interiors by a prefix XOR of the unescaped quotes; then a walk over only the brackets,
 * the scalars outside strings and the rare interesting positions.  Nothing is allocated per
 * record.
 *
 * What it checks -- everything trailguard's rule for records (detect/frame.py) looks at, so that
 * a document it accepts is one with no bad record at all; any failure returns a reason string
 * and the caller hands the text to the routes that judge each record alone (the scanner never
 * decides that a record is bad, so the two can never disagree):
 *   - the shape: ws* { ws* "Records" ws* : ws* [ (objects separated by commas) ] ws* } ws*;
 *   - the whole JSON grammar: every token outside strings (brackets, colons, commas, strings,
 *     scalars) is walked through a state machine, so keys, values and separators come in the
 *     order JSON allows; strings closed, no raw control characters in them, only valid escapes
 *     (\uXXXX with four hex digits; a UTF-16 surrogate only as a high-low pair), every scalar
 *     true, false, null or a JSON number;
 *   - UTF-8: the whole text (msgspec checks only the strings it decodes);
 *   - nesting: brackets matched by type, depth <= MAX_DEPTH (deeper: declined);
 *   - every record has a top-level "eventName" key with a string value, and a top-level
 *     eventSource, if any, is a string or null and not an event notification's ("aws:...").
 *
 * Which records are returned as candidates -- conservatively, so that a crafted file cannot
 * hide a record from the exact check the caller makes after decoding it:
 *   - a top-level eventName value that equals one of the names, byte for byte;
 *   - an eventName value containing a backslash (an escape could spell any name);
 *   - more than one top-level eventName key (a JSON parser keeps the last);
 *   - any \u escape of an ASCII letter inside the record (it could spell the key itself:
 *     "event\u004eame"; real CloudTrail writers never escape letters).
 *
 * records(buffer, names, simd=True, max_record=-1)
 *     -> (count, first_start, first_end, [index, start, end, ...]) or a str: why the document
 *        was declined (a record over max_record bytes among the reasons).
 * gunzip_records(gzip, size, names, max_record=-1)
 *     -> the same for a gzip file, inflated (libdeflate) into a buffer each thread keeps, all
 *        without the GIL.
 * gunzip(gzip, size)                 -> bytes or None: libdeflate without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <dlfcn.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__)
#define TG_X86_64 1
#include <immintrin.h>
#endif

#define MAX_DEPTH 1024
/* Positions flattened before a walk: at most 64 per block, plus the few written past the count. */
#define EVENTS_WALK_AT 4096
#define EVENTS_SIZE (EVENTS_WALK_AT + 64 + 12 + 64 * 2)

/* What may come next in the current container (the walk's state). */
enum { S_VALUE, S_ARR_FIRST, S_OBJ_FIRST, S_KEY, S_COLON, S_AFTER };

typedef struct {
    uint64_t quote, backslash;
    uint64_t op;   /* the operators { } [ ] : , */
    uint64_t sep;  /* whitespace and the operators */
    uint64_t ctrl; /* bytes below 0x20 */
    uint64_t ws;   /* whitespace: only set when ctrl is not 0 */
    uint64_t high; /* bytes of 0x80 and above (UTF-8 sequences) */
} masks_t;

typedef struct {
    const char *ptr;
    Py_ssize_t len;
} name_t;

typedef struct {
    const uint8_t *buf;
    Py_ssize_t n;
    const name_t *names;
    Py_ssize_t nnames;
    uint64_t lengths; /* bit l: a name of l bytes (bit 63: of 63 or more) */
    Py_ssize_t max_record; /* a bigger record is declined (the reference calls it bad); -1: none */
    int unterminated; /* the text ended inside a string */
    Py_ssize_t utf8_done; /* UTF-8 checked up to here */
    Py_ssize_t low_at; /* where the low half of the last high surrogate escape has its u */
    /* nesting and grammar */
    int depth;
    int state;
    uint8_t stack[MAX_DEPTH + 1];
    Py_ssize_t events[EVENTS_SIZE]; /* flattened positions waiting for walk() */
    Py_ssize_t nevents;
    Py_ssize_t doc_open, array_open, array_close, doc_close;
    /* the current record */
    Py_ssize_t rec_start;
    int rec_names;
    int rec_flag;
    /* results */
    Py_ssize_t count, first_start, first_end;
    Py_ssize_t *cand; /* triples: index, start, end */
    Py_ssize_t ncand, cap;
    const char *why; /* NULL while all is well */
    Py_ssize_t why_at;
} scan_t;

static inline int
fail(scan_t *s, const char *why, Py_ssize_t at)
{
    if (s->why == NULL) {
        s->why = why;
        s->why_at = at;
    }
    return -1;
}

static inline int
is_ws(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static inline int
is_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

static inline int
ends_token(uint8_t c)
{
    return is_ws(c) || c == ',' || c == ':' || c == '{' || c == '}' || c == '[' || c == ']' ||
           c == '"';
}

static inline uint64_t
prefix_xor(uint64_t x)
{
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    return x;
}

/* -- block masks ------------------------------------------------------------------------------ */

#define ALWAYS_INLINE static inline __attribute__((always_inline))

ALWAYS_INLINE void
masks_portable(const uint8_t *p, masks_t *m)
{
    masks_t r = {0, 0, 0, 0, 0, 0, 0};
    uint64_t op = 0;
    for (int i = 0; i < 64; i++) {
        uint8_t c = p[i];
        uint64_t bit = (uint64_t)1 << i;
        if (c == '"')
            r.quote |= bit;
        if (c == '\\')
            r.backslash |= bit;
        if (is_ws(c))
            r.ws |= bit;
        if (c == '{' || c == '[' || c == '}' || c == ']' || c == ':' || c == ',')
            op |= bit;
        if (c < 0x20)
            r.ctrl |= bit;
        if (c >= 0x80)
            r.high |= bit;
    }
    r.op = op;
    r.sep = r.ws | op;
    *m = r;
}

static inline uint64_t
prefix_xor_portable(uint64_t x)
{
    return prefix_xor(x);
}

#ifdef TG_X86_64
__attribute__((target("avx2"))) ALWAYS_INLINE uint64_t
mask32(__m256i eq)
{
    return (uint32_t)_mm256_movemask_epi8(eq);
}

#define AVX2 __attribute__((target("avx2,pclmul,bmi,bmi2,popcnt")))

AVX2 ALWAYS_INLINE void
masks_avx2(const uint8_t *p, masks_t *m)
{
    /* Classification by nibble lookup, as simdjson does: whitespace by the low nibble; the
     * operators after OR 0x20, which folds [ ] onto { } (a control byte folded onto : or , is
     * caught by the control-character test). */
    const __m256i ws_table = _mm256_setr_epi8(
        ' ', 100, 100, 100, 17, 100, 113, 2, 100, '\t', '\n', 112, 100, '\r', 100, 100,
        ' ', 100, 100, 100, 17, 100, 113, 2, 100, '\t', '\n', 112, 100, '\r', 100, 100);
    const __m256i op_table = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ':', '{', ',', '}', 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ':', '{', ',', '}', 0, 0);
    const __m256i quote = _mm256_set1_epi8('"');
    const __m256i backslash = _mm256_set1_epi8('\\');
    const __m256i lower = _mm256_set1_epi8(0x20);
    const __m256i ctrl_max = _mm256_set1_epi8(0x1f);
    __m256i x0 = _mm256_loadu_si256((const __m256i *)p);
    __m256i x1 = _mm256_loadu_si256((const __m256i *)(p + 32));
    __m256i f0 = _mm256_or_si256(x0, lower), f1 = _mm256_or_si256(x1, lower);
    __m256i op0 = _mm256_cmpeq_epi8(f0, _mm256_shuffle_epi8(op_table, f0));
    __m256i op1 = _mm256_cmpeq_epi8(f1, _mm256_shuffle_epi8(op_table, f1));
    __m256i ws0 = _mm256_cmpeq_epi8(x0, _mm256_shuffle_epi8(ws_table, x0));
    __m256i ws1 = _mm256_cmpeq_epi8(x1, _mm256_shuffle_epi8(ws_table, x1));
    m->quote = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(x0, quote)) |
               ((uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(x1, quote)) << 32);
    m->sep = (uint32_t)_mm256_movemask_epi8(_mm256_or_si256(op0, ws0)) |
             ((uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_or_si256(op1, ws1)) << 32);
    m->op = (uint32_t)_mm256_movemask_epi8(op0) |
            ((uint64_t)(uint32_t)_mm256_movemask_epi8(op1) << 32);
    /* Backslashes and control bytes are rare: one test each, the masks only when present. */
    __m256i bs0 = _mm256_cmpeq_epi8(x0, backslash), bs1 = _mm256_cmpeq_epi8(x1, backslash);
    __m256i bs = _mm256_or_si256(bs0, bs1);
    m->backslash = _mm256_testz_si256(bs, bs)
                       ? 0
                       : (uint32_t)_mm256_movemask_epi8(bs0) |
                             ((uint64_t)(uint32_t)_mm256_movemask_epi8(bs1) << 32);
    __m256i c0 = _mm256_cmpeq_epi8(_mm256_max_epu8(x0, ctrl_max), ctrl_max);
    __m256i c1 = _mm256_cmpeq_epi8(_mm256_max_epu8(x1, ctrl_max), ctrl_max);
    __m256i cc = _mm256_or_si256(c0, c1);
    if (_mm256_testz_si256(cc, cc)) {
        m->ctrl = 0;
        m->ws = 0;
    }
    else {
        m->ctrl = (uint32_t)_mm256_movemask_epi8(c0) |
                  ((uint64_t)(uint32_t)_mm256_movemask_epi8(c1) << 32);
        m->ws = (uint32_t)_mm256_movemask_epi8(ws0) |
                ((uint64_t)(uint32_t)_mm256_movemask_epi8(ws1) << 32);
    }
    __m256i hi = _mm256_or_si256(x0, x1);
    m->high = _mm256_testz_si256(hi, _mm256_set1_epi8((char)0x80))
                  ? 0
                  : (uint32_t)_mm256_movemask_epi8(x0) |
                        ((uint64_t)(uint32_t)_mm256_movemask_epi8(x1) << 32);
}

AVX2 ALWAYS_INLINE uint64_t
prefix_xor_avx2(uint64_t x)
{
    /* carry-less multiplication by all ones: bit i = XOR of bits 0..i */
    return (uint64_t)_mm_cvtsi128_si64(
        _mm_clmulepi64_si128(_mm_set_epi64x(0, (long long)x), _mm_set1_epi8((char)0xFF), 0));
}

static int
have_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("pclmul") &&
           __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
}
#else
static int
have_avx2(void)
{
    return 0;
}
#endif

/* -- tokens checked one by one (rare: scalars, escapes, the eventName keys) ------------------- */

static int
check_number(scan_t *s, Py_ssize_t at)
{
    const uint8_t *b = s->buf;
    Py_ssize_t n = s->n, i = at;
    if (b[i] == '-')
        i++;
    if (i < n && b[i] == '0')
        i++;
    else if (i < n && b[i] >= '1' && b[i] <= '9')
        while (i < n && is_digit(b[i]))
            i++;
    else
        return fail(s, "invalid character outside a string", at);
    if (i < n && b[i] == '.') {
        i++;
        if (i >= n || !is_digit(b[i]))
            return fail(s, "invalid number", at);
        while (i < n && is_digit(b[i]))
            i++;
    }
    if (i < n && (b[i] == 'e' || b[i] == 'E')) {
        i++;
        if (i < n && (b[i] == '+' || b[i] == '-'))
            i++;
        if (i >= n || !is_digit(b[i]))
            return fail(s, "invalid number", at);
        while (i < n && is_digit(b[i]))
            i++;
    }
    if (i < n && !ends_token(b[i]))
        return fail(s, "invalid character outside a string", i);
    return 0;
}

/* A scalar outside strings starts at `at`: true, false, null or a number, then a token end. */
ALWAYS_INLINE int
check_scalar(scan_t *s, Py_ssize_t at)
{
    const uint8_t *b = s->buf + at;
    Py_ssize_t left = s->n - at;
    Py_ssize_t len = 0;
    if (left >= 4 && b[0] == 't' && b[1] == 'r' && b[2] == 'u' && b[3] == 'e')
        len = 4;
    else if (left >= 5 && b[0] == 'f' && b[1] == 'a' && b[2] == 'l' && b[3] == 's' && b[4] == 'e')
        len = 5;
    else if (left >= 4 && b[0] == 'n' && b[1] == 'u' && b[2] == 'l' && b[3] == 'l')
        len = 4;
    else
        return check_number(s, at);
    if (left > len && !ends_token(b[len]))
        return fail(s, "invalid literal", at);
    return 0;
}

static inline int
hex_value(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* The escaped bytes of a block: each unescaped backslash escapes the byte after it. */
static inline uint64_t
escaped_bytes(uint64_t backslash, uint64_t *carry)
{
    uint64_t escaped = 0, b = backslash;
    if (*carry) {
        escaped = 1;
        b &= ~(uint64_t)1;
        *carry = 0;
    }
    while (b) {
        int i = __builtin_ctzll(b);
        if (i == 63) {
            *carry = 1;
            break;
        }
        escaped |= (uint64_t)1 << (i + 1);
        b &= ~((uint64_t)3 << i);
    }
    return escaped;
}

static int
hex4(const uint8_t *p)
{
    int code = 0;
    for (int k = 0; k < 4; k++) {
        int h = hex_value(p[k]);
        if (h < 0)
            return -1;
        code = code * 16 + h;
    }
    return code;
}

/* Check the escaped bytes of a block; return the bits of \u escapes that spell an ASCII letter
 * (their 'u'), or fail.  A UTF-16 surrogate escape must be a high half followed at once by a
 * low half (as JSON decoders that build text require): the high half checks the escape after
 * it and notes where its u is, so that the low half knows it was expected. */
static int
check_escapes(scan_t *s, Py_ssize_t base, uint64_t escaped, uint64_t *letters)
{
    const uint8_t *b = s->buf;
    while (escaped) {
        int i = __builtin_ctzll(escaped);
        escaped &= escaped - 1;
        Py_ssize_t at = base + i;
        if (at >= s->n)
            return fail(s, "unterminated string", at);
        switch (b[at]) {
        case '"':
        case '\\':
        case '/':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
            break;
        case 'u': {
            int code = s->n - at < 5 ? -1 : hex4(b + at + 1);
            if (code < 0)
                return fail(s, "invalid \\u escape", at);
            if ((code >= 'A' && code <= 'Z') || (code >= 'a' && code <= 'z'))
                *letters |= (uint64_t)1 << i;
            else if (code >= 0xD800 && code <= 0xDBFF) {
                int low = s->n - at < 11 || b[at + 5] != '\\' || b[at + 6] != 'u'
                              ? -1
                              : hex4(b + at + 7);
                if (low < 0xDC00 || low > 0xDFFF)
                    return fail(s, "a UTF-16 high surrogate escape without its low half", at);
                s->low_at = at + 6;
            }
            else if (code >= 0xDC00 && code <= 0xDFFF && at != s->low_at)
                return fail(s, "a lone UTF-16 low surrogate escape", at);
            break;
        }
        default:
            return fail(s, "invalid escape", at);
        }
    }
    return 0;
}

/* The UTF-8 sequences starting at the high bytes of a block (those not inside a sequence
 * already checked): the whole text must be UTF-8, as msgspec requires of every string it reads.
 * Rare in CloudTrail (names, user agents), so one byte at a time. */
static int
check_utf8(scan_t *s, Py_ssize_t base, uint64_t high)
{
    const uint8_t *b = s->buf;
    Py_ssize_t n = s->n;
    while (high) {
        Py_ssize_t at = base + __builtin_ctzll(high);
        high &= high - 1;
        if (at < s->utf8_done || at >= n)
            continue;
        uint8_t c = b[at];
        int len;
        uint32_t code, min;
        if (c >= 0xC2 && c <= 0xDF)
            len = 2, code = c & 0x1F, min = 0x80;
        else if (c >= 0xE0 && c <= 0xEF)
            len = 3, code = c & 0x0F, min = 0x800;
        else if (c >= 0xF0 && c <= 0xF4)
            len = 4, code = c & 0x07, min = 0x10000;
        else
            return fail(s, "invalid UTF-8", at);
        if (n - at < len)
            return fail(s, "invalid UTF-8", at);
        for (int k = 1; k < len; k++) {
            if ((b[at + k] & 0xC0) != 0x80)
                return fail(s, "invalid UTF-8", at);
            code = (code << 6) | (b[at + k] & 0x3F);
        }
        if (code < min || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF))
            return fail(s, "invalid UTF-8", at);
        s->utf8_done = at + len;
    }
    return 0;
}

/* Only whitespace in [from, to), or (when comma) whitespace around exactly one comma. */
static int
check_gap(scan_t *s, Py_ssize_t from, Py_ssize_t to, int comma)
{
    const uint8_t *b = s->buf;
    int commas = 0;
    for (Py_ssize_t i = from; i < to; i++) {
        if (b[i] == ',' && comma && commas == 0)
            commas = 1;
        else if (!is_ws(b[i]))
            return fail(s, "the Records array holds something other than objects", i);
    }
    if (comma && commas != 1)
        return fail(s, "records not separated by one comma", from);
    return 0;
}

static int
add_candidate(scan_t *s, Py_ssize_t index, Py_ssize_t start, Py_ssize_t end)
{
    if (s->ncand + 3 > s->cap) {
        Py_ssize_t cap = s->cap ? s->cap * 2 : 48;
        Py_ssize_t *grown = (Py_ssize_t *)PyMem_RawRealloc(s->cand, (size_t)cap * sizeof(Py_ssize_t));
        if (grown == NULL)
            return fail(s, "out of memory", start);
        s->cand = grown;
        s->cap = cap;
    }
    s->cand[s->ncand++] = index;
    s->cand[s->ncand++] = start;
    s->cand[s->ncand++] = end;
    return 0;
}

static int
on_open(scan_t *s, Py_ssize_t at)
{
    uint8_t c = s->buf[at];
    if (s->depth == 0 && at != s->doc_open)
        return fail(s, "more than one JSON value", at);
    if (s->depth == 1 && at != s->array_open)
        return fail(s, "the document holds more than the Records array", at);
    if (s->depth == 2) {
        if (c != '{')
            return fail(s, "the Records array holds something other than objects", at);
        s->rec_start = at;
        s->rec_names = 0;
        s->rec_flag = 0;
    }
    return 0;
}

/* After the closing bracket at `at` took the depth down to 2 or less (checked by the walk). */
static int
on_close(scan_t *s, Py_ssize_t at)
{
    if (s->depth == 2) {
        if (s->rec_names == 0)
            return fail(s, "a record without a plain top-level eventName", s->rec_start);
        if (s->max_record >= 0 && at + 1 - s->rec_start > s->max_record)
            return fail(s, "a record larger than max_record_bytes", s->rec_start);
        Py_ssize_t index = s->count++;
        if (index == 0) {
            s->first_start = s->rec_start;
            s->first_end = at + 1;
        }
        if (s->rec_flag && add_candidate(s, index, s->rec_start, at + 1) < 0)
            return -1;
    }
    else if (s->depth == 1)
        s->array_close = at;
    else if (s->depth == 0)
        s->doc_close = at;
    return 0;
}

/* The value of a top-level key at `j` (after the key): the position of the opening quote of a
 * string value, -1 for null, or -2 when the key is not followed by a colon (it was a value). */
static Py_ssize_t
value_at(scan_t *s, Py_ssize_t j)
{
    const uint8_t *b = s->buf;
    Py_ssize_t n = s->n;
    while (j < n && is_ws(b[j]))
        j++;
    if (j >= n || b[j] != ':')
        return -2;
    j++;
    while (j < n && is_ws(b[j]))
        j++;
    if (j < n && b[j] == '"')
        return j;
    if (n - j >= 4 && memcmp(b + j, "null", 4) == 0)
        return -1;
    return fail(s, "an eventName or eventSource that is not a string", j) - 2;
}

/* `"eventName"` or `"eventSource"` (maybe) at `at`, an opening quote at a record's top level:
 * count the name, judge its value; an eventSource must be a string or null, as msgspec's
 * probe of every record requires. */
static int
on_key(scan_t *s, Py_ssize_t at)
{
    const uint8_t *b = s->buf;
    Py_ssize_t n = s->n;
    if (n - at >= 13 && memcmp(b + at, "\"eventSource\"", 13) == 0) {
        Py_ssize_t j = value_at(s, at + 13);
        if (j < -2)
            return -1;
        /* an S3/SQS/SNS event notification ("aws:s3", ...) is not a CloudTrail record: the
         * reference judges it (a plain prefix; an escaped one makes the record doubtful) */
        if (j >= 0 && n - j > 5 && memcmp(b + j + 1, "aws:", 4) == 0)
            return fail(s, "an eventSource of an AWS event notification", j);
        return 0;
    }
    if (n - at < 11 || memcmp(b + at, "\"eventName\"", 11) != 0)
        return 0;
    Py_ssize_t j = value_at(s, at + 11);
    if (j == -2)
        return 0; /* a value "eventName", not a key */
    if (j < 0)
        return j < -2 ? -1 : fail(s, "an eventName that is not a string", at);
    Py_ssize_t k = j + 1;
    while (k < n && b[k] != '"' && b[k] != '\\')
        k++;
    if (k >= n)
        return fail(s, "unterminated string", j);
    s->rec_names++;
    if (b[k] == '\\' || s->rec_names > 1) {
        s->rec_flag = 1;
        return 0;
    }
    Py_ssize_t len = k - (j + 1);
    if (!((s->lengths >> (len < 63 ? len : 63)) & 1))
        return 0; /* no name of this length: most records */
    for (Py_ssize_t i = 0; i < s->nnames; i++) {
        if (s->names[i].len == len && memcmp(s->names[i].ptr, b + j + 1, (size_t)len) == 0) {
            s->rec_flag = 1;
            break;
        }
    }
    return 0;
}

typedef struct {
    uint64_t escape;  /* 1: the first byte of the next block is escaped */
    uint64_t instr;   /* all ones: the previous block ended inside a string */
    uint64_t scalar;  /* 1: the previous block ended inside a scalar */
} carry_t;

/* One 64-byte block at `base`; `PREFIX_XOR` is the prefix XOR of the block's flavour. */
#define BLOCK(PREFIX_XOR)                                                                        \
    uint64_t escaped = 0;                                                                        \
    if (m->backslash | c->escape)                                                                \
        escaped = escaped_bytes(m->backslash, &c->escape);                                       \
    uint64_t quotes = m->quote & ~escaped;                                                       \
    uint64_t instr = PREFIX_XOR(quotes) ^ c->instr; /* opening quotes and the insides */         \
    c->instr = (uint64_t)((int64_t)instr >> 63);                                                 \
    uint64_t bad = m->ctrl ? m->ctrl & (instr | ~m->ws) : 0;                                     \
    if (bad) {                                                                                   \
        int i = __builtin_ctzll(bad);                                                            \
        return fail(s, (instr >> i) & 1 ? "control character in a string"                       \
                                        : "invalid character outside a string", base + i);       \
    }                                                                                            \
    if (m->high && check_utf8(s, base, m->high) < 0)                                             \
        return -1;                                                                               \
    uint64_t letters = 0;                                                                        \
    if (escaped && check_escapes(s, base, escaped & instr, &letters) < 0)                        \
        return -1;                                                                               \
    uint64_t outside = ~(instr | quotes);                                                        \
    uint64_t scalar = outside & ~m->sep;                                                         \
    uint64_t starts = scalar & ~((scalar << 1) | c->scalar);                                     \
    c->scalar = scalar >> 63;                                                                    \
    /* the positions of every token outside strings (operators, the opening quote of each      \
     * string, the first byte of each scalar) and of the escaped letters, in order, for walk()  \
     * (scalars checked there, not here: a branch per scalar in this loop, which has 0 to a few \
     * per block, costs more mispredicted branches than the walk's, whose pattern repeats       \
     * record after record; measured: the scan -8 %) */                                         \
    FLATTEN((m->op & outside) | (quotes & instr) | letters | starts);                            \
    return 0;

/* Append the positions of the set bits of `bits` (block at `base`) to s->events. */
#define FLATTEN_PORTABLE(bits)                                                                   \
    do {                                                                                         \
        uint64_t left_ = (bits);                                                                 \
        while (left_) {                                                                          \
            s->events[s->nevents++] = base + __builtin_ctzll(left_);                             \
            left_ &= left_ - 1;                                                                  \
        }                                                                                        \
    } while (0)

/* The same without a branch per bit (simdjson's flatten): twelve positions written whatever
 * the count (tzcnt of 0 is 64: a harmless value past the count), more only when needed.  Since
 * every token is walked, a block of CloudTrail JSON has ~6 events on average, up to ~16
 * (measured on 1.35 MB files, one process, alternating: 4 -> 12, scan -16 %; 8: -4 %; 16: -9 %). */
#define FLATTEN_AVX2(bits)                                                                       \
    do {                                                                                         \
        uint64_t left_ = (bits);                                                                 \
        if (left_) {                                                                             \
            Py_ssize_t *out_ = s->events + s->nevents;                                           \
            int count_ = __builtin_popcountll(left_);                                            \
            for (int k_ = 0; k_ < 12; k_++) {                                                    \
                out_[k_] = base + (Py_ssize_t)_tzcnt_u64(left_);                                 \
                left_ = _blsr_u64(left_);                                                        \
            }                                                                                    \
            for (int k_ = 12; k_ < count_; k_++) {                                               \
                out_[k_] = base + (Py_ssize_t)_tzcnt_u64(left_);                                 \
                left_ = _blsr_u64(left_);                                                        \
            }                                                                                    \
            s->nevents += count_;                                                                \
        }                                                                                        \
    } while (0)

ALWAYS_INLINE int
block_portable(scan_t *s, carry_t *c, Py_ssize_t base, const masks_t *m)
{
#define FLATTEN FLATTEN_PORTABLE
    BLOCK(prefix_xor_portable)
#undef FLATTEN
}

#ifdef TG_X86_64
AVX2 ALWAYS_INLINE int
block_avx2(scan_t *s, carry_t *c, Py_ssize_t base, const masks_t *m)
{
#define FLATTEN FLATTEN_AVX2
    BLOCK(prefix_xor_avx2)
#undef FLATTEN
}
#endif

/* The second stage: the positions flattened by the blocks, in order -- every token outside
 * strings and the escaped letters inside them -- through JSON's grammar as a state machine
 * (what may come next in the current container), with the bracket stack.  One long loop, so
 * the branch predictor learns its pattern, which repeats record after record; record
 * boundaries (depth 2), the shape around them (depth 0 and 1), keys of a record (depth 3) and
 * scalars take the calls. */
static int
walk(scan_t *s)
{
    const uint8_t *b = s->buf;
    uint8_t *stack = s->stack;
    const Py_ssize_t *events = s->events;
    const Py_ssize_t n = s->n;
    int depth = s->depth, state = s->state;
    for (Py_ssize_t i = 0, count = s->nevents; i < count; i++) {
        Py_ssize_t at = events[i];
        uint8_t c = b[at];
        switch (c) {
        case '"':
            if (state == S_OBJ_FIRST || state == S_KEY) {
                /* a key; at a record's top level, maybe eventName or eventSource (the sixth
                 * letter is N or S) */
                if (depth == 3 && at + 12 < n && (b[at + 6] == 'N' || b[at + 6] == 'S') &&
                    on_key(s, at) < 0)
                    return -1;
                state = S_COLON;
            }
            else if (state <= S_ARR_FIRST && depth >= 3)
                state = S_AFTER;
            else
                return fail(s, depth == 2 ? "the Records array holds something other than objects"
                                          : "invalid JSON: a string where none may be",
                            at);
            break;
        case ':':
            if (state != S_COLON)
                return fail(s, "invalid JSON: a colon where none may be", at);
            state = S_VALUE;
            break;
        case ',':
            if (state != S_AFTER || depth == 0)
                return fail(s, "invalid JSON: a comma where none may be", at);
            if (depth == 1)
                return fail(s, "the document holds more than the Records array", at);
            state = stack[depth - 1] == '{' ? S_KEY : S_VALUE;
            break;
        case '{':
        case '[':
            if (state > S_ARR_FIRST)
                return fail(s, "invalid JSON: a value where none may be", at);
            if (depth >= MAX_DEPTH)
                return fail(s, "nested too deeply", at);
            if (depth <= 2) {
                s->depth = depth;
                if (on_open(s, at) < 0)
                    return -1;
            }
            stack[depth++] = c;
            state = c == '{' ? S_OBJ_FIRST : S_ARR_FIRST;
            break;
        case '}':
        case ']':
            if (depth == 0 || (stack[depth - 1] == '{') != (c == '}'))
                return fail(s, "mismatched brackets", at);
            if (state != S_AFTER && state != (c == '}' ? S_OBJ_FIRST : S_ARR_FIRST))
                return fail(s, "invalid JSON: a closing bracket where none may be", at);
            depth--;
            state = S_AFTER;
            if (depth <= 2) {
                s->depth = depth;
                if (on_close(s, at) < 0)
                    return -1;
            }
            break;
        default:
            if (c == 'u' && b[at - 1] == '\\') {
                /* a \u escape of a letter (a scalar starting with u has no backslash before
                 * it: one outside a string would have started the scalar) */
                if (depth >= 3)
                    s->rec_flag = 1; /* it could spell the key */
                break;
            }
            /* the start of a scalar outside strings */
            if (state > S_ARR_FIRST || depth < 3)
                return fail(s, depth == 2 ? "the Records array holds something other than objects"
                                          : "invalid JSON: a value where none may be",
                            at);
            if (check_scalar(s, at) < 0)
                return -1;
            state = S_AFTER;
        }
    }
    s->depth = depth;
    s->state = state;
    s->nevents = 0;
    return 0;
}

/* ws* { ws* "Records" ws* : ws* [ */
static int
check_head(scan_t *s)
{
    const uint8_t *b = s->buf;
    Py_ssize_t n = s->n, i = 0;
    while (i < n && is_ws(b[i]))
        i++;
    if (i >= n || b[i] != '{')
        return fail(s, "not an object", i);
    s->doc_open = i++;
    while (i < n && is_ws(b[i]))
        i++;
    if (n - i < 9 || memcmp(b + i, "\"Records\"", 9) != 0)
        return fail(s, "the first key is not Records", i);
    i += 9;
    while (i < n && is_ws(b[i]))
        i++;
    if (i >= n || b[i] != ':')
        return fail(s, "the first key is not Records", i);
    i++;
    while (i < n && is_ws(b[i]))
        i++;
    if (i >= n || b[i] != '[')
        return fail(s, "Records is not an array", i);
    s->array_open = i;
    return 0;
}

/* The block loop, once per mask function so that each is inlined (AVX2 code only in the AVX2
 * copy, chosen at run time). */
#define BLOCK_LOOP(NAME, MASKS, BLOCK_FN, ATTR)                                                  \
    ATTR static void NAME(scan_t *s)                                                             \
    {                                                                                            \
        masks_t m;                                                                               \
        carry_t c = {0, 0, 0};                                                                   \
        Py_ssize_t base = 0, n = s->n;                                                           \
        for (; base + 64 <= n; base += 64) {                                                     \
            MASKS(s->buf + base, &m);                                                            \
            if (BLOCK_FN(s, &c, base, &m) < 0)                                                   \
                return;                                                                          \
            if (s->nevents > EVENTS_WALK_AT && walk(s) < 0)                                      \
                return;                                                                          \
        }                                                                                        \
        /* The tail, padded with spaces: no event, and an open string stays open. */             \
        uint8_t tail[64 * 2];                                                                    \
        memset(tail, ' ', sizeof tail);                                                          \
        memcpy(tail, s->buf + base, (size_t)(n - base));                                         \
        for (Py_ssize_t off = 0; base + off < n; off += 64) {                                    \
            MASKS(tail + off, &m);                                                               \
            if (BLOCK_FN(s, &c, base + off, &m) < 0)                                             \
                return;                                                                          \
        }                                                                                        \
        if (walk(s) < 0)                                                                         \
            return;                                                                              \
        s->unterminated = c.instr != 0;                                                          \
    }

BLOCK_LOOP(blocks_portable, masks_portable, block_portable, )
#ifdef TG_X86_64
BLOCK_LOOP(blocks_avx2, masks_avx2, block_avx2, AVX2)
#endif

static void
scan(scan_t *s, int simd)
{
    if (check_head(s) < 0)
        return;
#ifdef TG_X86_64
    if (simd && have_avx2())
        blocks_avx2(s);
    else
        blocks_portable(s);
#else
    (void)simd;
    blocks_portable(s);
#endif
    if (s->why != NULL)
        return;
    if (s->unterminated)
        fail(s, "unterminated string", s->n);
    else if (s->depth != 0 || s->doc_close < 0)
        fail(s, "unbalanced brackets (truncated?)", s->n);
    else if (check_gap(s, s->doc_close + 1, s->n, 0) < 0)
        s->why = "more than one JSON value";
}

/* -- gunzip without the GIL ------------------------------------------------------------------ */

/* libdeflate, the decompressor trailguard uses, is bundled in the `deflate` package, whose Python
 * functions hold the GIL while they inflate: decoding could not use threads.  Its library exports
 * libdeflate's public C API (libdeflate.h, stable since 1.0), so gunzip() below calls the same
 * code with the GIL released.  bind_libdeflate() takes the path of the package's extension (it is
 * already loaded: dlopen only finds it); without the symbols, trailguard uses `deflate`'s
 * Python functions as before. */
typedef void *(*alloc_fn)(void);
typedef void (*free_fn)(void *);
typedef int (*gzip_fn)(void *, const void *, size_t, void *, size_t, size_t *, size_t *);
static alloc_fn ld_alloc;
static free_fn ld_free;
static gzip_fn ld_gzip;

static PyObject *
bind_libdeflate(PyObject *module, PyObject *arg)
{
    (void)module;
    const char *path = PyUnicode_AsUTF8(arg);
    if (path == NULL)
        return NULL;
    void *lib = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (lib == NULL)
        lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL)
        Py_RETURN_FALSE;
    alloc_fn a = (alloc_fn)dlsym(lib, "libdeflate_alloc_decompressor");
    free_fn f = (free_fn)dlsym(lib, "libdeflate_free_decompressor");
    gzip_fn g = (gzip_fn)dlsym(lib, "libdeflate_gzip_decompress_ex");
    if (a == NULL || f == NULL || g == NULL)
        Py_RETURN_FALSE; /* the handle stays open: the module holds the library anyway */
    ld_alloc = a, ld_free = f, ld_gzip = g;
    Py_RETURN_TRUE;
}

/* gunzip(buffer, size) -> bytes or None: one gzip member that inflates to exactly `size` bytes
 * and ends exactly at the end of `buffer`; None for anything else (several members, trailing
 * bytes, a size that lies, bad data), which the caller's zlib path then judges and words. */
static PyObject *
gunzip(PyObject *module, PyObject *args)
{
    (void)module;
    Py_buffer view;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "y*n:gunzip", &view, &size))
        return NULL;
    if (ld_gzip == NULL || size < 0) {
        PyBuffer_Release(&view);
        if (ld_gzip == NULL)
            PyErr_SetString(PyExc_RuntimeError, "libdeflate is not bound");
        else
            PyErr_SetString(PyExc_ValueError, "negative size");
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    int rc = -1;
    size_t used = 0, made = 0;
    char *target = PyBytes_AS_STRING(out);
    Py_BEGIN_ALLOW_THREADS
    void *d = ld_alloc();
    if (d != NULL) {
        rc = ld_gzip(d, view.buf, (size_t)view.len, target, (size_t)size, &used, &made);
        ld_free(d);
    }
    Py_END_ALLOW_THREADS
    int whole = rc == 0 && used == (size_t)view.len && made == (size_t)size;
    PyBuffer_Release(&view);
    if (!whole) {
        Py_DECREF(out);
        if (rc == -1 && !PyErr_Occurred())
            return PyErr_NoMemory();
        Py_RETURN_NONE;
    }
    return out;
}

/* -- Python ----------------------------------------------------------------------------------- */

/* The names tuple as a C table (PyMem; the bytes stay owned by the tuple). */
static name_t *
names_table(PyObject *names, Py_ssize_t *count)
{
    Py_ssize_t nnames = PyTuple_GET_SIZE(names);
    name_t *table = PyMem_Malloc((size_t)(nnames ? nnames : 1) * sizeof(name_t));
    if (table == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nnames; i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        if (!PyBytes_Check(name)) {
            PyMem_Free(table);
            PyErr_SetString(PyExc_TypeError, "names must be a tuple of bytes");
            return NULL;
        }
        table[i].ptr = PyBytes_AS_STRING(name);
        table[i].len = PyBytes_GET_SIZE(name);
    }
    *count = nnames;
    return table;
}

static scan_t *
new_scan(const uint8_t *buf, Py_ssize_t n, const name_t *names, Py_ssize_t nnames,
         Py_ssize_t max_record)
{
    scan_t *s = PyMem_RawCalloc(1, sizeof(scan_t));
    if (s == NULL)
        return NULL;
    s->buf = buf;
    s->n = n;
    s->names = names;
    s->nnames = nnames;
    for (Py_ssize_t i = 0; i < nnames; i++)
        s->lengths |= (uint64_t)1 << (names[i].len < 63 ? names[i].len : 63);
    s->doc_open = s->array_open = s->array_close = s->doc_close = -1;
    s->max_record = max_record;
    return s;
}

static void
free_scan(scan_t *s)
{
    PyMem_RawFree(s->cand);
    PyMem_RawFree(s);
}

static PyObject *
scan_records(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"buffer", "names", "simd", "max_record", NULL};
    Py_buffer view;
    PyObject *names;
    int simd = 1;
    Py_ssize_t max_record = -1;
    (void)module;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*O!|pn:records", keywords, &view,
                                     &PyTuple_Type, &names, &simd, &max_record))
        return NULL;
    Py_ssize_t nnames = 0;
    name_t *table = names_table(names, &nnames);
    scan_t *s =
        table ? new_scan((const uint8_t *)view.buf, view.len, table, nnames, max_record) : NULL;
    if (s == NULL) {
        PyMem_Free(table);
        PyBuffer_Release(&view);
        return table ? PyErr_NoMemory() : NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    scan(s, simd);
    Py_END_ALLOW_THREADS
    PyObject *result = NULL;
    if (s->why != NULL) {
        result = PyUnicode_FromFormat("%s at byte %zd", s->why, s->why_at);
    }
    else {
        PyObject *found = PyList_New(s->ncand);
        if (found != NULL) {
            for (Py_ssize_t i = 0; i < s->ncand; i++) {
                PyObject *v = PyLong_FromSsize_t(s->cand[i]);
                if (v == NULL) {
                    Py_CLEAR(found);
                    break;
                }
                PyList_SET_ITEM(found, i, v);
            }
        }
        if (found != NULL)
            result = Py_BuildValue("(nnnN)", s->count, s->first_start, s->first_end, found);
    }
    free_scan(s);
    PyMem_Free(table);
    PyBuffer_Release(&view);
    return result;
}

/* Each thread inflates into its own buffer, kept between calls (no 1.2 MB allocation, page
 * faults and free per file); one bigger than KEEP_BYTES is let go after use. */
#define KEEP_BYTES (32 << 20)
static __thread uint8_t *tl_text;
static __thread size_t tl_size;

/* gunzip_records(buffer, size, names, max_record=-1) -> None when the gzip is not one member
 * of exactly `size` bytes (the caller's zlib path judges); a str (why) when the scan declines
 * (the caller inflates the text again for the other routes); else (count, first record,
 * [index, record, ...]) with the records as bytes.  Inflating and scanning run without the
 * GIL: threads use every core. */
static PyObject *
gunzip_records(PyObject *module, PyObject *args)
{
    (void)module;
    Py_buffer view;
    Py_ssize_t size;
    PyObject *names;
    Py_ssize_t max_record = -1;
    if (!PyArg_ParseTuple(args, "y*nO!|n:gunzip_records", &view, &size, &PyTuple_Type, &names,
                          &max_record))
        return NULL;
    if (ld_gzip == NULL || size <= 0) {
        PyBuffer_Release(&view);
        if (ld_gzip == NULL) {
            PyErr_SetString(PyExc_RuntimeError, "libdeflate is not bound");
            return NULL;
        }
        Py_RETURN_NONE;
    }
    Py_ssize_t nnames = 0;
    name_t *table = names_table(names, &nnames);
    if (table == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    int rc = -1;
    size_t used = 0, made = 0;
    scan_t *s = NULL;
    Py_BEGIN_ALLOW_THREADS
    if (tl_size < (size_t)size) {
        uint8_t *grown = realloc(tl_text, (size_t)size);
        if (grown != NULL)
            tl_text = grown, tl_size = (size_t)size;
    }
    void *d = tl_size >= (size_t)size ? ld_alloc() : NULL;
    if (d != NULL) {
        rc = ld_gzip(d, view.buf, (size_t)view.len, tl_text, (size_t)size, &used, &made);
        ld_free(d);
    }
    if (rc == 0 && used == (size_t)view.len && made == (size_t)size) {
        s = new_scan(tl_text, size, table, nnames, max_record);
        if (s != NULL)
            scan(s, 1);
    }
    else if (rc != -1)
        rc = 1; /* inflated, but not one member of exactly `size` bytes */
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    PyObject *result = NULL;
    if (rc == -1 || (rc == 0 && s == NULL)) {
        PyErr_NoMemory();
    }
    else if (rc != 0) {
        result = Py_None;
        Py_INCREF(result);
    }
    else if (s->why != NULL) {
        /* declined: the reason only; the caller inflates again into a buffer of its own (a
         * copy of the text here would double the memory of a big declined file) */
        result = PyUnicode_FromFormat("%s at byte %zd", s->why, s->why_at);
    }
    else {
        PyObject *found = PyList_New(s->ncand / 3 * 2);
        for (Py_ssize_t i = 0, j = 0; found != NULL && i < s->ncand; i += 3, j += 2) {
            PyObject *index = PyLong_FromSsize_t(s->cand[i]);
            PyObject *text = PyBytes_FromStringAndSize((const char *)tl_text + s->cand[i + 1],
                                                       s->cand[i + 2] - s->cand[i + 1]);
            if (index == NULL || text == NULL) {
                Py_XDECREF(index);
                Py_XDECREF(text);
                Py_CLEAR(found);
                break;
            }
            PyList_SET_ITEM(found, j, index);
            PyList_SET_ITEM(found, j + 1, text);
        }
        if (found != NULL) {
            const char *first = (const char *)tl_text + (s->count ? s->first_start : 0);
            Py_ssize_t first_size = s->count ? s->first_end - s->first_start : 0;
            result = Py_BuildValue("(ny#N)", s->count, first, first_size, found);
        }
    }
    if (s != NULL)
        free_scan(s);
    PyMem_Free(table);
    if (tl_size > KEEP_BYTES) {
        free(tl_text);
        tl_text = NULL, tl_size = 0;
    }
    return result;
}

static PyMethodDef methods[] = {
    {"bind_libdeflate", bind_libdeflate, METH_O,
     "bind_libdeflate(path) -> bool: find libdeflate's C API in that (loaded) library."},
    {"gunzip_records", gunzip_records, METH_VARARGS,
     "gunzip_records(buffer, size, names, max_record=-1): inflate and scan without the GIL "
     "(see _scan.c)."},
    {"gunzip", gunzip, METH_VARARGS,
     "gunzip(buffer, size) -> bytes or None, without the GIL (see _scan.c)."},
    {"records", (PyCFunction)(void (*)(void))scan_records, METH_VARARGS | METH_KEYWORDS,
     "records(buffer, names, simd=True, max_record=-1) -> (count, first_start, first_end, "
     "[index, start, end, ...]) or a str saying why the document was declined."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "trailguard.detect._scan",
    "One pass over a CloudTrail Records document (see _scan.c).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__scan(void)
{
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "SIMD", have_avx2()) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
