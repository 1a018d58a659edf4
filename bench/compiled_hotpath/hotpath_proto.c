/*
 * hotpath_proto: a PROTOTYPE of a compiled pickle-frame -> COPY-row hot path (issue 13).
 *
 * Not shipped, not imported by logsvc: bench/compiled_hotpath/build.py compiles it into
 * bench/compiled_hotpath/_build/ (gitignored) and bench/compiled_hotpath/measure.py measures
 * it against the pure-Python path (PickleFormat.parse + RowEncoder.encode).
 *
 * What it does: walks one SocketHandler frame body (pickle.dumps(record.__dict__, 1)) opcode
 * by opcode, without building the record dict, and writes the row RowEncoder.encode would
 * write for it, byte for byte. It accepts only the "plain record" shape
 *
 *     EMPTY_DICT [BINPUT 0] MARK (key [BINPUT] value [BINPUT])* SETITEMS STOP
 *
 * with every key a BINUNICODE and every value one of BINUNICODE, NONE, BININT1, BININT2,
 * BININT, BINFLOAT, LONG (text, up to 18 digits), INT (text, up to 18 digits, and the
 * protocol-1 bools "01"/"00"), NEWTRUE, NEWFALSE, or a BINGET of an earlier string or scalar
 * (a string the record holds twice); BINPUT indices in sequence from 0. Anything
 * else (another opcode, a value of another type where a column needs text or a number, a
 * value the Python encoder would cut, a NUL or lone surrogate in extra, a float `created` out
 * of (0, 9999-12-31], duplicate keys, invalid UTF-8 ...) is handed back: the caller runs the
 * Python path for that frame (the fallback design). Fallbacks are counted by reason.
 *
 * The `extra` keys are written in the order the Python encoder writes them: the iteration
 * order of the set `rec.keys() - STANDARD_ATTRS`, which depends on the process's string hash
 * seed. It is computed once per key layout by running that very expression on a dict with the
 * same keys in the same order, and cached (LAYOUTS entries, compared by key bytes).
 *
 * Bounds: frames are at most max_frame bytes (the caller's cap), every length is checked
 * against the end of the frame before it is read, a record has at most MAX_KEYS keys, a
 * layout's keys at most MAX_LAYOUT_KEY_BYTES bytes; the output buffer grows to at most one
 * row (the row is refused, i.e. handed back, if extra would exceed MAX_EXTRA_BYTES).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define MAX_KEYS 64
#define LAYOUTS 8
#define MAX_LAYOUT_KEY_BYTES 4096
/* copyfmt caps (characters) */
#define MAX_MESSAGE_CHARS (1 << 20)
#define MAX_TRACE_CHARS (1 << 18)
#define MAX_FIELD_CHARS (1 << 15)
#define MAX_EXTRA_BYTES (1 << 20)
#define MAX_EPOCH 253402300799.0
#define INT32_BOUND (1LL << 31)

/* value kinds */
enum { V_NONE, V_STR, V_INT, V_FLOAT, V_BOOL };

/* columns of the row taken from the record (order of copyfmt._get_texts, then numbers) */
enum {
    C_LEVELNAME, C_NAME, C_MSG, C_PATHNAME, C_FUNCNAME, C_MODULE, C_PROCESSNAME, C_THREADNAME,
    C_EXC_TEXT, C_STACK_INFO, C_LEVELNO, C_LINENO, C_PROCESS, C_THREAD, C_CREATED, C_NCOLS
};
#define ROLE_IGNORED (-1) /* a standard attribute the row does not use (args, msecs, ...) */
#define ROLE_EXTRA (-2)

static const char *const COL_KEYS[C_NCOLS] = {
    "levelname", "name", "msg", "pathname", "funcName", "module", "processName", "threadName",
    "exc_text", "stack_info", "levelno", "lineno", "process", "thread", "created",
};
static const Py_ssize_t TEXT_CAPS[10] = {
    MAX_FIELD_CHARS, MAX_FIELD_CHARS, MAX_MESSAGE_CHARS, MAX_FIELD_CHARS, MAX_FIELD_CHARS,
    MAX_FIELD_CHARS, MAX_FIELD_CHARS, MAX_FIELD_CHARS, MAX_TRACE_CHARS, MAX_TRACE_CHARS,
};

/* fallback reasons */
enum {
    F_OPCODE, F_STRUCTURE, F_UTF8, F_MEMO, F_TOO_MANY_KEYS, F_DUP_KEYS, F_KEY, F_TEXT_TYPE,
    F_TEXT_CAP, F_NUMBER, F_CREATED, F_EXTRA_VALUE, F_EXTRA_SIZE, F_FRAME_HEADER, F_COMPLEXITY,
    F_NREASONS
};
static const char *const REASONS[F_NREASONS] = {
    "opcode", "structure", "utf8", "memo", "too_many_keys", "duplicate_keys", "key",
    "text_type", "text_cap", "number", "created", "extra_value", "extra_size", "frame_header",
    "complexity",
};
static unsigned long long fallback_counts[F_NREASONS];

typedef struct {
    int kind;
    const unsigned char *s; /* V_STR: UTF-8 bytes inside the frame */
    Py_ssize_t n;
    long long i; /* V_INT, V_BOOL */
    double f;    /* V_FLOAT */
} Val;

typedef struct {
    const unsigned char *s;
    Py_ssize_t n;
} Span;

typedef struct {
    int used;
    int nkeys;
    int bad; /* keys the C path cannot write (NUL or surrogate in an extra key): always hand back */
    Py_ssize_t keyoff[MAX_KEYS], keylen[MAX_KEYS];
    unsigned char keys[MAX_LAYOUT_KEY_BYTES];
    signed char role[MAX_KEYS];
    int nextra;
    int extra_order[MAX_KEYS]; /* pair index of the j-th extra key in JSON order */
    Py_ssize_t jkeyoff[MAX_KEYS], jkeylen[MAX_KEYS]; /* "key": JSON-and-COPY-escaped, in jkeys */
    unsigned char jkeys[MAX_LAYOUT_KEY_BYTES * 7 + MAX_KEYS * 4];
} Layout;

static Layout layouts[LAYOUTS];
static int last_layout = 0, next_victim = 0;
static unsigned long long layout_misses = 0;

static PyObject *standard_attrs = NULL; /* frozenset */
static PyObject *orjson_dumps = NULL;

static long long cached_sec = -1;
static char cached_prefix[32];

/* output scratch buffer */
static unsigned char *obuf = NULL;
static size_t ocap = 0, olen = 0;

static int ensure(size_t more) {
    if (olen + more <= ocap)
        return 0;
    size_t cap = ocap ? ocap : 4096;
    while (cap < olen + more)
        cap *= 2;
    unsigned char *p = PyMem_Realloc(obuf, cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    obuf = p;
    ocap = cap;
    return 0;
}

static inline void put(const void *s, size_t n) {
    memcpy(obuf + olen, s, n);
    olen += n;
}

static inline void put_ll(long long v) {
    char tmp[24];
    int k = 0;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[k++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        obuf[olen++] = '-';
    while (k)
        obuf[olen++] = (unsigned char)tmp[--k];
}

/* ---- strings ----------------------------------------------------------------------------- */

/* byte classes: 1 COPY text escape (\\ \t \n \r) , 2 NUL, 4 JSON escape (< 0x20, '"', '\\'),
 * 8 non-ASCII lead or continuation byte */
static unsigned char cls[256];

#define S_COPY 1
#define S_NUL 2
#define S_JSON 4
#define S_SURR 16

/* Validate UTF-8 as CPython's decoder with "surrogatepass" does (pickle's BINUNICODE), and
 * return the flags of what the string holds; -1 if it is not valid. *nchars gets the number
 * of code points. */
static int scan_str(const unsigned char *s, Py_ssize_t n, Py_ssize_t *nchars) {
    int flags = 0;
    Py_ssize_t chars = 0, i = 0;
    while (i < n) {
        unsigned char c = s[i];
        unsigned char k = cls[c];
        if (!(k & 8)) {
            flags |= k;
            i++;
            chars++;
            continue;
        }
        if (c < 0xC2)
            return -1;
        if (c < 0xE0) {
            if (i + 1 >= n || (s[i + 1] & 0xC0) != 0x80)
                return -1;
            i += 2;
        } else if (c < 0xF0) {
            if (i + 2 >= n || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80)
                return -1;
            if (c == 0xE0 && s[i + 1] < 0xA0)
                return -1;
            if (c == 0xED && s[i + 1] >= 0xA0)
                flags |= S_SURR; /* a lone surrogate: surrogatepass decodes it */
            i += 3;
        } else if (c < 0xF5) {
            if (i + 3 >= n || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80 ||
                (s[i + 3] & 0xC0) != 0x80)
                return -1;
            if ((c == 0xF0 && s[i + 1] < 0x90) || (c == 0xF4 && s[i + 1] >= 0x90))
                return -1;
            i += 4;
        } else {
            return -1;
        }
        chars++;
    }
    *nchars = chars;
    return flags;
}

/* A text column: COPY text escaping, NUL and lone surrogates -> U+FFFD (counted). */
static void put_text(const unsigned char *s, Py_ssize_t n, int flags, long long *replaced) {
    if (!(flags & (S_COPY | S_NUL | S_SURR))) {
        put(s, (size_t)n);
        return;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        switch (c) {
        case '\\': put("\\\\", 2); break;
        case '\t': put("\\t", 2); break;
        case '\n': put("\\n", 2); break;
        case '\r': put("\\r", 2); break;
        case 0: put("\xef\xbf\xbd", 3); (*replaced)++; break;
        case 0xED:
            if (i + 2 < n && s[i + 1] >= 0xA0) {
                put("\xef\xbf\xbd", 3);
                (*replaced)++;
                i += 2;
                break;
            }
            /* fall through */
        default: obuf[olen++] = c;
        }
    }
}

/* A JSON string as orjson writes it, then COPY-escaped (every backslash doubled). The caller
 * has refused NUL and surrogates. */
static void put_json_str(const unsigned char *s, Py_ssize_t n, int flags) {
    static const char hex[] = "0123456789abcdef";
    obuf[olen++] = '"';
    if (!(flags & S_JSON)) {
        put(s, (size_t)n);
    } else {
        for (Py_ssize_t i = 0; i < n; i++) {
            unsigned char c = s[i];
            if (c >= 0x20 && c != '"' && c != '\\') {
                obuf[olen++] = c;
                continue;
            }
            switch (c) {
            case '"': put("\\\\\"", 3); break;
            case '\\': put("\\\\\\\\", 4); break;
            case '\b': put("\\\\b", 3); break;
            case '\t': put("\\\\t", 3); break;
            case '\n': put("\\\\n", 3); break;
            case '\f': put("\\\\f", 3); break;
            case '\r': put("\\\\r", 3); break;
            default: {
                unsigned char u[7] = {'\\', '\\', 'u', '0', '0', (unsigned char)hex[c >> 4],
                                      (unsigned char)hex[c & 15]};
                put(u, 7);
            }
            }
        }
    }
    obuf[olen++] = '"';
}

/* ---- timestamps -------------------------------------------------------------------------- */

static void put_digits(char *q, int v, int width) {
    for (int k = width - 1; k >= 0; k--) {
        q[k] = (char)('0' + v % 10);
        v /= 10;
    }
}

static int put_timestamp(double created) {
    /* RowEncoder.timestamp(created) for 0 < created < MAX_EPOCH: floor, rounded microseconds,
     * "YYYY-mm-dd HH:MM:SS.uuuuuu+00" (UTC). */
    double fsec = floor(created);
    long long sec = (long long)fsec;
    long long usec = (long long)((created - fsec) * 1e6 + 0.5);
    if (usec >= 1000000) {
        sec += 1;
        usec -= 1000000;
    }
    if (sec != cached_sec) {
        time_t t = (time_t)sec;
        struct tm tm;
        if (gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 > 9999)
            return -1;
        int f[6] = {tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec};
        char *q = cached_prefix;
        put_digits(q, f[0], 4);
        q[4] = '-';
        put_digits(q + 5, f[1], 2);
        q[7] = '-';
        put_digits(q + 8, f[2], 2);
        q[10] = ' ';
        put_digits(q + 11, f[3], 2);
        q[13] = ':';
        put_digits(q + 14, f[4], 2);
        q[16] = ':';
        put_digits(q + 17, f[5], 2);
        cached_sec = sec;
    }
    put(cached_prefix, 19);
    char tail[10];
    tail[0] = '.';
    put_digits(tail + 1, (int)usec, 6);
    memcpy(tail + 7, "+00", 3);
    put(tail, 10);
    return 0;
}

/* ---- layouts ----------------------------------------------------------------------------- */

static int role_of(const unsigned char *s, Py_ssize_t n) {
    for (int c = 0; c < C_NCOLS; c++) {
        if ((Py_ssize_t)strlen(COL_KEYS[c]) == n && memcmp(COL_KEYS[c], s, (size_t)n) == 0)
            return c;
    }
    return ROLE_EXTRA; /* refined by the caller: a standard attribute is ROLE_IGNORED */
}

static int layout_matches(const Layout *L, const Span *keys, int nkeys) {
    if (!L->used || L->nkeys != nkeys)
        return 0;
    for (int k = 0; k < nkeys; k++) {
        if (L->keylen[k] != keys[k].n || memcmp(L->keys + L->keyoff[k], keys[k].s, (size_t)keys[k].n))
            return 0;
    }
    return 1;
}

/* Build the layout of these keys with Python's own expression. Returns the layout, NULL with
 * *reason set for a hand-back, or NULL with a Python error set. */
static Layout *layout_build(const Span *keys, int nkeys, int *reason) {
    Py_ssize_t total = 0;
    for (int k = 0; k < nkeys; k++)
        total += keys[k].n;
    if (total > MAX_LAYOUT_KEY_BYTES) {
        *reason = F_KEY;
        return NULL;
    }
    PyObject *d = PyDict_New();
    if (d == NULL)
        return NULL;
    Layout *L = &layouts[next_victim];
    L->used = 0;
    Py_ssize_t off = 0;
    for (int k = 0; k < nkeys; k++) {
        PyObject *key = PyUnicode_DecodeUTF8((const char *)keys[k].s, keys[k].n, "surrogatepass");
        if (key == NULL) {
            PyErr_Clear();
            Py_DECREF(d);
            *reason = F_UTF8;
            return NULL;
        }
        PyObject *idx = PyLong_FromLong(k);
        if (idx == NULL || PyDict_SetItem(d, key, idx) < 0) {
            Py_XDECREF(idx);
            Py_DECREF(key);
            Py_DECREF(d);
            return NULL;
        }
        int std = PySet_Contains(standard_attrs, key);
        Py_DECREF(idx);
        Py_DECREF(key);
        if (std < 0) {
            Py_DECREF(d);
            return NULL;
        }
        int role = role_of(keys[k].s, keys[k].n);
        L->role[k] = (signed char)(role >= 0 ? role : (std ? ROLE_IGNORED : ROLE_EXTRA));
        memcpy(L->keys + off, keys[k].s, (size_t)keys[k].n);
        L->keyoff[k] = off;
        L->keylen[k] = keys[k].n;
        off += keys[k].n;
    }
    if (PyDict_GET_SIZE(d) != nkeys) {
        Py_DECREF(d);
        *reason = F_DUP_KEYS;
        return NULL;
    }
    /* extra_keys = rec.keys() - STANDARD_ATTRS, exactly as RowEncoder.encode computes it */
    PyObject *view = PyObject_CallMethod(d, "keys", NULL);
    PyObject *extra = view ? PyNumber_Subtract(view, standard_attrs) : NULL;
    Py_XDECREF(view);
    if (extra == NULL) {
        Py_DECREF(d);
        return NULL;
    }
    PyObject *it = PyObject_GetIter(extra), *key;
    if (it == NULL) {
        Py_DECREF(extra);
        Py_DECREF(d);
        return NULL;
    }
    int j = 0;
    L->bad = 0;
    Py_ssize_t joff = 0;
    while ((key = PyIter_Next(it)) != NULL) {
        PyObject *idx = PyDict_GetItemWithError(d, key);
        Py_DECREF(key);
        if (idx == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_RuntimeError, "extra key not in the dict");
            break;
        }
        int k = (int)PyLong_AsLong(idx);
        L->extra_order[j] = k;
        /* the JSON key, escaped as orjson does, then for COPY; into jkeys */
        Py_ssize_t nch;
        int fl = scan_str(keys[k].s, keys[k].n, &nch);
        if (fl < 0 || (fl & (S_NUL | S_SURR)))
            L->bad = 1;
        size_t save = olen;
        if (ensure((size_t)keys[k].n * 7 + 8) < 0)
            break;
        put_json_str(keys[k].s, keys[k].n, fl < 0 ? 0 : fl);
        obuf[olen++] = ':';
        L->jkeyoff[j] = joff;
        L->jkeylen[j] = (Py_ssize_t)(olen - save);
        memcpy(L->jkeys + joff, obuf + save, olen - save);
        joff += (Py_ssize_t)(olen - save);
        olen = save;
        j++;
    }
    Py_DECREF(it);
    Py_DECREF(extra);
    Py_DECREF(d);
    if (PyErr_Occurred())
        return NULL;
    L->nextra = j;
    L->nkeys = nkeys;
    L->used = 1;
    last_layout = next_victim;
    next_victim = (next_victim + 1) % LAYOUTS;
    layout_misses++;
    return L;
}

/* ---- one frame --------------------------------------------------------------------------- */

/* Parse a LONG/INT text argument: [-]digits, at most 18 digits, no leading zero (the C
 * unpickler reads these with base 0). Returns 0 and *v, or -1 (hand back). */
static int parse_text_int(const unsigned char *s, Py_ssize_t n, long long *v) {
    Py_ssize_t i = 0;
    int neg = 0;
    if (i < n && s[i] == '-') {
        neg = 1;
        i++;
    }
    Py_ssize_t digits = n - i;
    if (digits < 1 || digits > 18) /* fits in a long long */
        return -1;
    if (s[i] == '0' && digits > 1)
        return -1;
    long long x = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        x = x * 10 + (s[i] - '0');
    }
    *v = neg ? -x : x;
    return 0;
}

static inline uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Read one value token at *pp; 0 or a fallback reason + 1 */
static int read_value(const unsigned char **pp, const unsigned char *end, Val *v) {
    const unsigned char *p = *pp;
    if (p >= end)
        return F_STRUCTURE + 1;
    v->n = 0;
    switch (*p) {
    case 'X': {
        if (end - p < 5)
            return F_STRUCTURE + 1;
        uint32_t n = le32(p + 1);
        if ((uint64_t)n > (uint64_t)(end - p - 5))
            return F_STRUCTURE + 1;
        v->kind = V_STR;
        v->s = p + 5;
        v->n = n;
        p += 5 + n;
        break;
    }
    case 'N': v->kind = V_NONE; p++; break;
    case 0x88: v->kind = V_BOOL; v->i = 1; p++; break;
    case 0x89: v->kind = V_BOOL; v->i = 0; p++; break;
    case 'K':
        if (end - p < 2)
            return F_STRUCTURE + 1;
        v->kind = V_INT; v->i = p[1]; p += 2;
        break;
    case 'M':
        if (end - p < 3)
            return F_STRUCTURE + 1;
        v->kind = V_INT; v->i = p[1] | p[2] << 8; p += 3;
        break;
    case 'J':
        if (end - p < 5)
            return F_STRUCTURE + 1;
        v->kind = V_INT; v->i = (int32_t)le32(p + 1); p += 5;
        break;
    case 'G': {
        if (end - p < 9)
            return F_STRUCTURE + 1;
        uint64_t u = 0;
        for (int k = 1; k <= 8; k++)
            u = u << 8 | p[k];
        memcpy(&v->f, &u, 8);
        v->kind = V_FLOAT;
        p += 9;
        break;
    }
    case 'L':
    case 'I': {
        const unsigned char *nl = memchr(p + 1, '\n', (size_t)(end - p - 1));
        if (nl == NULL)
            return F_STRUCTURE + 1;
        Py_ssize_t n = nl - (p + 1);
        if (*p == 'L') {
            if (n < 2 || p[n] != 'L' || parse_text_int(p + 1, n - 1, &v->i) < 0)
                return F_OPCODE + 1;
            v->kind = V_INT;
            v->n = 1; /* a text int: counted like a float by the complexity bound */
        } else if (n == 2 && p[1] == '0' && (p[2] == '0' || p[2] == '1')) {
            v->kind = V_BOOL; /* protocol 0/1 True and False */
            v->i = p[2] - '0';
        } else {
            if (parse_text_int(p + 1, n, &v->i) < 0)
                return F_OPCODE + 1;
            v->kind = V_INT;
            v->n = 1;
        }
        p = nl + 1;
        break;
    }
    default:
        return F_OPCODE + 1;
    }
    *pp = p;
    return 0;
}

/* Write the row of one frame body at the end of obuf. Returns 0, a fallback reason + 1 (obuf
 * unchanged), or -1 with a Python error. */
static int frame_row(const unsigned char *p, Py_ssize_t size, long long seq, const char *peer,
                     Py_ssize_t npeer, const char *rts, Py_ssize_t nrts, long long *replaced) {
    const unsigned char *end = p + size;
    Span keys[MAX_KEYS];
    Val vals[MAX_KEYS];
    int nkeys = 0, memo = 0, numbers = 0, r;
    if (size < 4 || p[0] != '}')
        return F_STRUCTURE + 1;
    p++;
    if (*p == 'q') {
        if (p[1] != 0)
            return F_MEMO + 1;
        memo = 1;
        p += 2;
    }
    if (p >= end || *p != '(')
        return F_STRUCTURE + 1;
    p++;
    /* memo entries (BINPUT, in sequence): strings and scalars a later BINGET may name; the
     * record dict itself (entry 0) and text ints are not taken by reference (hand back) */
    Val memov[256];
    int gets = 0;
    Py_ssize_t vbytes = 0;
    if (memo == 1)
        memov[0].kind = -1;
    for (;;) {
        if (p >= end)
            return F_STRUCTURE + 1;
        if (*p == 'u') {
            if (p + 2 != end || p[1] != '.')
                return F_STRUCTURE + 1;
            break;
        }
        if (nkeys == MAX_KEYS)
            return F_TOO_MANY_KEYS + 1;
        for (int half = 0; half < 2; half++) {
            Val *v = &vals[nkeys], kv;
            Val *t = half ? v : &kv;
            if (p + 1 < end && *p == 'h') { /* BINGET */
                if (p[1] >= memo || memov[p[1]].kind < 0 || (memov[p[1]].kind == V_INT && memov[p[1]].n))
                    return F_MEMO + 1;
                *t = memov[p[1]];
                p += 2;
                gets++;
            } else {
                if (!half && *p != 'X')
                    return F_KEY + 1;
                if ((r = read_value(&p, end, t)) != 0)
                    return r;
            }
            if (!half) {
                if (kv.kind != V_STR)
                    return F_KEY + 1;
                keys[nkeys].s = kv.s;
                keys[nkeys].n = kv.n;
            }
            if (p + 1 < end && *p == 'q') {
                if (p[1] != memo)
                    return F_MEMO + 1;
                memov[memo] = *t;
                memo++;
                p += 2;
            }
            if (memo > 255)
                return F_MEMO + 1;
        }
        /* _scan_exact refuses frames over 9 KiB with more than 1024 floats or long ints
         * ("complexity"): hand back well before that */
        if (vals[nkeys].kind == V_FLOAT || (vals[nkeys].kind == V_INT && vals[nkeys].n == 1))
            numbers++;
        if (vals[nkeys].kind == V_STR)
            vbytes += vals[nkeys].n;
        nkeys++;
    }
    /* with shared references the Python path normalizes the dict, under a budget of
     * MAX_NORMALIZED_CHARS (4 Mi) characters of str values: hand back past it */
    if (gets && vbytes > (4 << 20))
        return F_COMPLEXITY + 1;
    if (numbers > 1000)
        return F_COMPLEXITY + 1;

    /* the layout: the last one used, another cached one, or a new one */
    Layout *L = &layouts[last_layout];
    if (!layout_matches(L, keys, nkeys)) {
        L = NULL;
        for (int k = 0; k < LAYOUTS; k++) {
            if (layout_matches(&layouts[k], keys, nkeys)) {
                L = &layouts[k];
                last_layout = k;
                break;
            }
        }
        if (L == NULL) {
            /* the keys must be valid UTF-8 first (the layout is built from them) */
            for (int k = 0; k < nkeys; k++) {
                Py_ssize_t nch;
                if (scan_str(keys[k].s, keys[k].n, &nch) < 0)
                    return F_UTF8 + 1;
            }
            int reason = -1;
            L = layout_build(keys, nkeys, &reason);
            if (L == NULL)
                return reason >= 0 ? reason + 1 : -1;
        }
    }
    if (L->bad)
        return F_KEY + 1;

    /* the columns */
    const Val *col[C_NCOLS] = {NULL};
    static const Val none = {V_NONE, NULL, 0, 0, 0.0};
    for (int k = 0; k < nkeys; k++) {
        if (L->role[k] >= 0)
            col[(int)L->role[k]] = &vals[k];
    }
    for (int c = 0; c < C_NCOLS; c++)
        if (col[c] == NULL)
            col[c] = &none;

    int tflags[10];
    for (int c = 0; c < 10; c++) {
        const Val *v = col[c];
        if (v->kind == V_NONE)
            continue;
        if (v->kind != V_STR)
            return F_TEXT_TYPE + 1;
        Py_ssize_t nch;
        tflags[c] = scan_str(v->s, v->n, &nch);
        if (tflags[c] < 0)
            return F_UTF8 + 1;
        if (nch > TEXT_CAPS[c])
            return F_TEXT_CAP + 1;
    }
    for (int c = C_LEVELNO; c <= C_THREAD; c++) {
        const Val *v = col[c];
        if (v->kind == V_NONE)
            continue;
        if (v->kind != V_INT)
            return F_NUMBER + 1;
        if ((c == C_LEVELNO || c == C_LINENO) && (v->i < -INT32_BOUND || v->i >= INT32_BOUND))
            return F_NUMBER + 1;
    }
    const Val *created = col[C_CREATED];
    if (created->kind != V_NONE &&
        (created->kind != V_FLOAT || !(created->f > 0.0 && created->f < MAX_EPOCH)))
        return F_CREATED + 1;
    /* extra values: str (valid, no NUL, no surrogate), int, float, bool, None */
    int eflags[MAX_KEYS];
    size_t need = 256 + (size_t)npeer + (size_t)nrts + 40;
    for (int c = 0; c < 10; c++)
        need += (size_t)col[c]->n * 3 + 2;
    for (int j = 0; j < L->nextra; j++) {
        const Val *v = &vals[L->extra_order[j]];
        need += (size_t)L->jkeylen[j] + 2;
        if (v->kind == V_STR) {
            Py_ssize_t nch;
            eflags[j] = scan_str(v->s, v->n, &nch);
            if (eflags[j] < 0)
                return F_UTF8 + 1;
            if (eflags[j] & (S_NUL | S_SURR))
                return F_EXTRA_VALUE + 1;
            need += (size_t)v->n * 7 + 2;
        } else {
            need += 40;
        }
    }
    if (ensure(need) < 0)
        return -1;

    size_t start = olen;
    long long rep = 0;
    put_ll(seq);
    obuf[olen++] = '\t';
    if (created->kind == V_NONE)
        put(rts, (size_t)nrts);
    else if (put_timestamp(created->f) < 0) {
        olen = start;
        return F_CREATED + 1;
    }
    obuf[olen++] = '\t';
    put(rts, (size_t)nrts);
    obuf[olen++] = '\t';
    /* levelno levelname name msg pathname lineno func module process pname thread tname exc stack */
    static const int order[14] = {C_LEVELNO, C_LEVELNAME, C_NAME, C_MSG, C_PATHNAME, C_LINENO,
                                  C_FUNCNAME, C_MODULE, C_PROCESS, C_PROCESSNAME, C_THREAD,
                                  C_THREADNAME, C_EXC_TEXT, C_STACK_INFO};
    for (int o = 0; o < 14; o++) {
        int c = order[o];
        const Val *v = col[c];
        if (v->kind == V_NONE)
            put("\\N", 2);
        else if (c >= C_LEVELNO)
            put_ll(v->i);
        else
            put_text(v->s, v->n, tflags[c], &rep);
        obuf[olen++] = '\t';
    }
    put(peer, (size_t)npeer);
    obuf[olen++] = '\t';
    if (L->nextra == 0) {
        put("\\N", 2);
    } else {
        size_t js = olen;
        obuf[olen++] = '{';
        for (int j = 0; j < L->nextra; j++) {
            const Val *v = &vals[L->extra_order[j]];
            if (j)
                obuf[olen++] = ',';
            put(L->jkeys + L->jkeyoff[j], (size_t)L->jkeylen[j]);
            switch (v->kind) {
            case V_NONE: put("null", 4); break;
            case V_BOOL: v->i ? put("true", 4) : put("false", 5); break;
            case V_INT: put_ll(v->i); break;
            case V_STR: put_json_str(v->s, v->n, eflags[j]); break;
            case V_FLOAT: {
                /* orjson's own float text (not repr's): ask it */
                PyObject *f = PyFloat_FromDouble(v->f);
                PyObject *b = f ? PyObject_CallOneArg(orjson_dumps, f) : NULL;
                Py_XDECREF(f);
                if (b == NULL) {
                    olen = start;
                    return -1;
                }
                put(PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b));
                Py_DECREF(b);
                break;
            }
            }
        }
        obuf[olen++] = '}';
        if (olen - js > MAX_EXTRA_BYTES) {
            olen = start;
            return F_EXTRA_SIZE + 1;
        }
    }
    put("\t\\N\t\\N\n", 7);
    *replaced += rep;
    return 0;
}

/* ---- the module functions ---------------------------------------------------------------- */

static PyObject *py_configure(PyObject *self, PyObject *args) {
    PyObject *std, *dumps;
    if (!PyArg_ParseTuple(args, "OO", &std, &dumps))
        return NULL;
    if (!PyFrozenSet_Check(std)) {
        PyErr_SetString(PyExc_TypeError, "standard attrs must be a frozenset");
        return NULL;
    }
    Py_XSETREF(standard_attrs, Py_NewRef(std));
    Py_XSETREF(orjson_dumps, Py_NewRef(dumps));
    memset(layouts, 0, sizeof layouts);
    Py_RETURN_NONE;
}

static int check_peer(const char *peer, Py_ssize_t n) {
    /* RowEncoder's fast path writes peer raw, its slow path escaped: the prototype takes only
     * peers where both agree (an address never holds these) */
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)peer[i];
        if (c == '\\' || c == '\t' || c == '\n' || c == '\r' || c == 0 || c >= 0x80) {
            PyErr_SetString(PyExc_ValueError, "peer must be plain ASCII without COPY escapes");
            return -1;
        }
    }
    return 0;
}

/* row(body, seq, peer, received_ts) -> (row bytes, replaced) or None (hand back) */
static PyObject *py_row(PyObject *self, PyObject *args) {
    Py_buffer body;
    long long seq;
    const char *peer, *rts;
    Py_ssize_t npeer, nrts;
    if (standard_attrs == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure() first");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*Ls#s#", &body, &seq, &peer, &npeer, &rts, &nrts))
        return NULL;
    if (check_peer(peer, npeer) < 0) {
        PyBuffer_Release(&body);
        return NULL;
    }
    long long rep = 0;
    olen = 0;
    int r = frame_row(body.buf, body.len, seq, peer, npeer, rts, nrts, &rep);
    PyBuffer_Release(&body);
    if (r < 0)
        return NULL;
    if (r > 0) {
        fallback_counts[r - 1]++;
        Py_RETURN_NONE;
    }
    PyObject *row = PyBytes_FromStringAndSize((const char *)obuf, (Py_ssize_t)olen);
    if (row == NULL)
        return NULL;
    return Py_BuildValue("NL", row, rep);
}

/* rows(data, pos, seq, peer, received_ts, max_frame, out, budget)
 *   -> (pos, nrows, nbytes, replaced, status)
 * Appends to the list `out` the row of every complete frame from `pos` on, one bytes object a
 * row, until: the data ends or holds only part of a frame (status 0), a frame the C path hands
 * back (status 1: `pos` is its header; the caller runs the Python path for it and calls again),
 * the rows reach `budget` bytes (status 2: a block is full), a header the framer would refuse
 * (status 3: length 0 or over max_frame; the Python framer raises for it). */
static PyObject *py_rows(PyObject *self, PyObject *args) {
    Py_buffer data;
    Py_ssize_t pos, max_frame, budget;
    long long seq;
    const char *peer, *rts;
    Py_ssize_t npeer, nrts;
    PyObject *out;
    if (standard_attrs == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure() first");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*nLs#s#nO!n", &data, &pos, &seq, &peer, &npeer, &rts, &nrts,
                          &max_frame, &PyList_Type, &out, &budget))
        return NULL;
    if (check_peer(peer, npeer) < 0 || pos < 0 || pos > data.len) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "pos out of range");
        PyBuffer_Release(&data);
        return NULL;
    }
    const unsigned char *buf = data.buf;
    Py_ssize_t n = data.len, nrows = 0, nbytes = 0;
    long long rep = 0;
    int status = 0;
    while (n - pos >= 4) {
        uint32_t len = (uint32_t)buf[pos] << 24 | (uint32_t)buf[pos + 1] << 16 |
                       (uint32_t)buf[pos + 2] << 8 | buf[pos + 3];
        if (len == 0 || (Py_ssize_t)len > max_frame) {
            fallback_counts[F_FRAME_HEADER]++;
            status = 3;
            break;
        }
        if ((Py_ssize_t)len > n - pos - 4)
            break;
        olen = 0;
        int r = frame_row(buf + pos + 4, len, seq, peer, npeer, rts, nrts, &rep);
        if (r < 0) {
            PyBuffer_Release(&data);
            return NULL;
        }
        if (r > 0) {
            fallback_counts[r - 1]++;
            status = 1;
            break;
        }
        PyObject *row = PyBytes_FromStringAndSize((const char *)obuf, (Py_ssize_t)olen);
        if (row == NULL || PyList_Append(out, row) < 0) {
            Py_XDECREF(row);
            PyBuffer_Release(&data);
            return NULL;
        }
        Py_DECREF(row);
        pos += 4 + (Py_ssize_t)len;
        seq++;
        nrows++;
        nbytes += (Py_ssize_t)olen;
        if (nbytes >= budget) {
            status = 2;
            break;
        }
    }
    PyBuffer_Release(&data);
    return Py_BuildValue("nnnLi", pos, nrows, nbytes, rep, status);
}

static PyObject *py_fallbacks(PyObject *self, PyObject *noargs) {
    PyObject *d = PyDict_New();
    if (d == NULL)
        return NULL;
    for (int r = 0; r < F_NREASONS; r++) {
        PyObject *v = PyLong_FromUnsignedLongLong(fallback_counts[r]);
        if (v == NULL || PyDict_SetItemString(d, REASONS[r], v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(v);
    }
    PyObject *v = PyLong_FromUnsignedLongLong(layout_misses);
    if (v == NULL || PyDict_SetItemString(d, "layout_misses", v) < 0) {
        Py_XDECREF(v);
        Py_DECREF(d);
        return NULL;
    }
    Py_DECREF(v);
    return d;
}

static PyObject *py_reset_counts(PyObject *self, PyObject *noargs) {
    memset(fallback_counts, 0, sizeof fallback_counts);
    layout_misses = 0;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"configure", py_configure, METH_VARARGS, "configure(STANDARD_ATTRS, orjson.dumps)"},
    {"row", py_row, METH_VARARGS, "row(body, seq, peer, received_ts) -> (row, replaced) | None"},
    {"rows", py_rows, METH_VARARGS,
     "rows(data, pos, seq, peer, received_ts, max_frame, out, budget) -> "
     "(pos, nrows, nbytes, replaced, status)"},
    {"fallbacks", py_fallbacks, METH_NOARGS, "hand-backs by reason, and layout cache misses"},
    {"reset_counts", py_reset_counts, METH_NOARGS, "zero the counters"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_hotpath_proto",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__hotpath_proto(void) {
    for (int c = 0; c < 256; c++) {
        unsigned char k = 0;
        if (c == '\\' || c == '\t' || c == '\n' || c == '\r')
            k |= S_COPY;
        if (c == 0)
            k |= S_NUL | S_JSON;
        if (c < 0x20 || c == '"' || c == '\\')
            k |= S_JSON;
        if (c >= 0x80)
            k |= 8;
        cls[c] = k;
    }
    return PyModule_Create(&moddef);
}
