/*
 * pagewalk._x86dump: the x86-64 ptdump walk and text, compiled.
 *
 * The same answer as the numpy path (runs.iter_runs() -> ptdump.vector.BreakStream ->
 * ptdump.x86.format_fast()), which tests hold it equal to, for the one case where Python's
 * start-up is most of the time: `pagewalk dump` and `checkwx` of an x86-64 kernel. It exists
 * because numpy's import alone (about 90 ms) is more than the whole walk of 2^20 pages here
 * (issue 3, README "How it is fast"); ptdump/x86_compiled.py is its Python side.
 *
 * Semantics, as in the Python modules it mirrors:
 *  - entries are classified as arch/x86/include/asm/pgtable.h's p?d_none/bad/present/leaf
 *    (arch/x86.py classify()): holes, leaves, tables, and entries the kernel skips;
 *  - the permission word is effective_prot() of arch/x86/mm/dump_pagetables.c: USER and RW
 *    ANDed, NX ORed down the levels (Intel SDM Vol. 3A §4.6.1);
 *  - note_page() of dump_pagetables.c, with its address markers, one marker per call, ESPfix's
 *    max_lines, and the final note_page(st, 0, -1, 0) flush;
 *  - a table referenced by two or more entries (KASAN's shadow, a hostile image) has its run
 *    list computed once and replayed (runs.py `_Stream`), within the same caches' bounds.
 * Entry bits: Intel SDM Vol. 3A §4.5, tables 4-15 to 4-20; arch/x86/include/asm/pgtable_types.h.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#define X_PRESENT 0x1ULL
#define X_RW 0x2ULL
#define X_USER 0x4ULL
#define X_PWT 0x8ULL
#define X_PCD 0x10ULL
#define X_ACCESSED 0x20ULL
#define X_DIRTY 0x40ULL
#define X_PSE 0x80ULL /* PAT in a 4 KiB PTE */
#define X_GLOBAL 0x100ULL
#define X_PAT_LARGE 0x1000ULL
#define X_NX (1ULL << 63)
#define PFN_MASK 0x000FFFFFFFFFF000ULL /* PTE_PFN_MASK: bits 51:12 (__PHYSICAL_MASK_SHIFT 52) */
#define FLAGS_MASK (~PFN_MASK)         /* PTE_FLAGS_MASK: the ptdump key */
#define KERNPG_TABLE (X_PRESENT | X_RW | X_ACCESSED | X_DIRTY)
#define KNL_ERRATUM (X_DIRTY | X_ACCESSED)
#define PERM_BITS (X_USER | X_RW | X_NX)
#define PERM_IDENTITY (X_USER | X_RW) /* folds into anything as itself */

#define SKIP_KLEVEL (-3)   /* runs.SKIP_KLEVEL */
#define MISSING_BASE (-10) /* runs.MISSING_BASE */
#define MAX_LEVELS 5
#define ENTRIES 512
#define TABLE_BYTES 4096

#define CACHE_TABLE_RUNS (1 << 18) /* runs.CACHE_TABLE_RUNS */
#define CACHE_RUNS (1 << 19)       /* runs.CACHE_RUNS */
#define RELEASE_TABLES 1024        /* bottom tables read through a mapping between two madvise(DONTNEED) */
#define OUT_CHUNK (1 << 18)

static const char *LEVEL_NAME[] = {"pgd", "p4d", "pud", "pmd", "pte"};
static const char UNITS[] = "BKMGTPE";

typedef struct {
    uint64_t off, val, key, eff;
    int8_t klevel, hw;
    uint8_t zero;
} Run;

typedef struct {
    Run *runs;
    size_t n, cap;
    int overflow;
} Rec;

enum { T_UNKNOWN = 0, T_CACHED, T_UNCACHEABLE };

typedef struct {
    uint64_t key; /* pa | level << 56, 0 = empty slot (pa 0 at level 0 is the root, never looked up) */
    uint32_t refs;
    uint8_t state;
    Run *runs;
    size_t nruns;
} Node;

typedef struct {
    uint64_t start, end; /* offsets in the root's span, end exclusive */
} Range;

/* Tables read from the file for one level: n tables from pa0 (one table per level is in use at a
 * time, the walk being depth-first; level MAX_LEVELS is the reference count's) */
#define READ_AHEAD 64
typedef struct {
    uint8_t *buf; /* READ_AHEAD tables */
    uint64_t pa0, last_pa;
    int n, ahead;
} Window;

/* printk_prot() of (prot, level), from a small direct-mapped cache: a dump has few distinct ones */
#define PROT_TEXT 34 /* 30 columns of flags, the level's 3 letters, '\n' */
#define PROT_CACHE 256
typedef struct {
    uint64_t prot;
    int level; /* -1: empty */
    char text[PROT_TEXT];
} ProtText;

typedef struct {
    uint64_t off;
    int max_lines;
    const char *name;
    Py_ssize_t name_len;
} Marker;

typedef struct {
    /* memory: one buffer and its segments, or a Python callable pa -> bytes | None */
    const uint8_t *buf;
    Py_ssize_t buf_len;
    int fd; /* >= 0: tables are pread() from this file, not read through buf */
    Window win[MAX_LEVELS + 1];
    uint64_t *seg_pa, *seg_end;
    int64_t *seg_off;
    Py_ssize_t nseg;
    PyObject *reader;
    int release;
    long bottom_read;
    /* the paging mode */
    int nlev;
    int role[MAX_LEVELS];
    int hole_depth[MAX_LEVELS];
    int shift[MAX_LEVELS];
    uint64_t top, half, high;
    /* the table cache */
    Node *nodes;
    size_t nodes_cap, nodes_n;
    size_t cached_runs;
    /* the consumer: note_page() */
    Range *ranges;
    Py_ssize_t nranges;
    Marker *markers;
    Py_ssize_t nmarkers;
    int check_wx;
    unsigned long long max_runs;
    unsigned long long emitted;
    int have_pending;
    Run pending;
    int started;
    int8_t cur_klevel;
    uint64_t cur_key, cur_eff;
    uint64_t start_va;
    Py_ssize_t marker;
    long lines;
    long long ranges_written;
    uint64_t wx_pages;
    PyObject *wx_list;
    long long wx_max, wx_dropped;
    ProtText prot_cache[PROT_CACHE];
    /* output: chunks of text to a Python callable */
    PyObject *write;
    int binary; /* write takes bytes (a binary file's write), else str */
    char *out;
    size_t out_n;
    int failed;     /* a Python exception is set, or overflowed */
    int overflowed; /* more than max_runs runs */
} W;

/* ---- memory ---------------------------------------------------------------------------------- */

static inline uint64_t rd64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

/* The table at `pa` (TABLE_BYTES in one segment, as MappedMemory.gather_tables() requires), or
 * NULL. With a reader callable, *owner gets the bytes object to release after use; with a file
 * descriptor the table is read into win[level]. */
static const uint8_t *table_at(W *w, int level, uint64_t pa, PyObject **owner) {
    *owner = NULL;
    if (w->reader) {
        PyObject *r = PyObject_CallFunction(w->reader, "K", (unsigned long long)pa);
        if (!r) {
            w->failed = 1;
            return NULL;
        }
        if (r == Py_None) {
            Py_DECREF(r);
            return NULL;
        }
        if (!PyBytes_Check(r) || PyBytes_GET_SIZE(r) != TABLE_BYTES) {
            Py_DECREF(r);
            PyErr_SetString(PyExc_ValueError, "reader must return 4096 bytes or None");
            w->failed = 1;
            return NULL;
        }
        *owner = r;
        return (const uint8_t *)PyBytes_AS_STRING(r);
    }
    Py_ssize_t lo = 0, hi = w->nseg; /* the last segment starting at or below pa */
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (w->seg_pa[mid] <= pa) lo = mid + 1;
        else hi = mid;
    }
    Py_ssize_t i = lo - 1;
    if (i < 0 || pa + TABLE_BYTES > w->seg_end[i] || pa + TABLE_BYTES < pa) return NULL;
    int64_t off = w->seg_off[i] + (int64_t)(pa - w->seg_pa[i]);
    if (w->fd >= 0) { /* pread(): the process's memory stays its own, whatever the image's size */
        Window *wd = &w->win[level];
        uint64_t rel = pa - wd->pa0;
        int sequential = pa == wd->last_pa + TABLE_BYTES;
        wd->last_pa = pa;
        if (rel < (uint64_t)wd->n * TABLE_BYTES && !(rel % TABLE_BYTES)) return wd->buf + rel; /* read ahead */
        /* tables met in address order (as allocators often place them) are read several at a
         * time, twice as many each time the order holds, within the segment */
        uint64_t k = sequential ? (uint64_t)wd->ahead * 2 : 1;
        if (k > READ_AHEAD) k = READ_AHEAD;
        if (k > (w->seg_end[i] - pa) / TABLE_BYTES) k = (w->seg_end[i] - pa) / TABLE_BYTES;
        ssize_t got;
        do got = pread(w->fd, wd->buf, (size_t)k * TABLE_BYTES, (off_t)off);
        while (got < 0 && errno == EINTR);
        if (got < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            w->failed = 1;
            return NULL;
        }
        wd->pa0 = pa;
        wd->n = (int)(got / TABLE_BYTES);
        wd->ahead = (int)k;
        return wd->n ? wd->buf : NULL; /* none: the file ends inside the table */
    }
    if (off < 0 || off + TABLE_BYTES > w->buf_len) return NULL;
    return w->buf + off;
}

static void release_pages(W *w) {
    /* a caller's mapping: the pages read so far leave the process (they stay in the page cache) */
    if (w->release && w->buf && w->buf_len > 0) madvise((void *)w->buf, (size_t)w->buf_len, MADV_DONTNEED);
}

/* ---- classification (arch/x86.py classify(), arch/x86/include/asm/pgtable.h) ------------------ */

enum { K_HOLE, K_LEAF, K_TABLE, K_SKIP };

static inline int classify(int role, uint64_t e) {
    uint64_t flags = e & FLAGS_MASK;
    switch (role) {
    case 0: /* pgd_none() || pgd_bad() */
        if (e == 0 || (flags & ~(X_USER | X_NX)) != KERNPG_TABLE) return K_HOLE;
        return K_TABLE;
    case 1: /* p4d_none() || p4d_bad() */
        if ((e & ~KNL_ERRATUM) == 0 || (flags & ~(KERNPG_TABLE | X_USER | X_NX)) != 0) return K_HOLE;
        return K_TABLE;
    case 2: /* pud_none(), pud_leaf(), pud_present() */
        if ((e & ~KNL_ERRATUM) == 0) return K_HOLE;
        if (e & X_PSE) return K_LEAF;
        if (!(e & X_PRESENT)) return K_SKIP;
        return K_TABLE;
    case 3: /* pmd_none(), pmd_leaf(), pmd_present(): PRESENT, PROTNONE (= GLOBAL) or PSE */
        if ((e & ~KNL_ERRATUM) == 0) return K_HOLE;
        if (e & X_PSE) return K_LEAF;
        if (!(e & (X_PRESENT | X_GLOBAL | X_PSE))) return K_SKIP;
        return K_TABLE;
    default:
        return K_LEAF; /* every PTE slot is reported */
    }
}

static inline uint64_t fold(uint64_t parent, uint64_t child) {
    return (parent & child & (X_USER | X_RW)) | ((parent | child) & X_NX);
}

/* ---- the table cache: (level, pa) -> references, run list ------------------------------------- */

static inline uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

static Node *node_get(W *w, int level, uint64_t pa, int create) {
    uint64_t key = pa | ((uint64_t)(level + 1) << 56);
    if (create && (w->nodes_n + 1) * 2 > w->nodes_cap) {
        size_t ncap = w->nodes_cap ? w->nodes_cap * 2 : 1024;
        Node *nn = PyMem_Calloc(ncap, sizeof(Node));
        if (!nn) {
            PyErr_NoMemory();
            w->failed = 1;
            return NULL;
        }
        for (size_t i = 0; i < w->nodes_cap; i++) {
            if (!w->nodes[i].key) continue;
            size_t j = mix64(w->nodes[i].key) & (ncap - 1);
            while (nn[j].key) j = (j + 1) & (ncap - 1);
            nn[j] = w->nodes[i];
        }
        PyMem_Free(w->nodes);
        w->nodes = nn;
        w->nodes_cap = ncap;
    }
    if (!w->nodes_cap) return NULL;
    size_t j = mix64(key) & (w->nodes_cap - 1);
    while (w->nodes[j].key) {
        if (w->nodes[j].key == key) return &w->nodes[j];
        j = (j + 1) & (w->nodes_cap - 1);
    }
    if (!create) return NULL;
    w->nodes[j].key = key;
    w->nodes_n++;
    return &w->nodes[j];
}

/* References to every distinct table below the root, counted over the distinct tables above
 * (each read once), so shared ones are known before the walk reaches them. */
static int count_refs(W *w, uint64_t root) {
    size_t qcap = 256, qn = 0, qi = 0;
    uint64_t *q = PyMem_Malloc(qcap * sizeof(uint64_t) * 2);
    if (!q) {
        PyErr_NoMemory();
        return -1;
    }
    q[0] = root;
    q[1] = 0;
    qn = 1;
    while (qi < qn) {
        uint64_t pa = q[2 * qi], lvl = q[2 * qi + 1];
        qi++;
        if ((int)lvl >= w->nlev - 1) continue;
        PyObject *owner;
        const uint8_t *t = table_at(w, MAX_LEVELS, pa, &owner);
        if (w->failed) break;
        if (!t) continue;
        for (int j = 0; j < ENTRIES; j++) {
            uint64_t e = rd64(t + 8 * j);
            if (classify(w->role[lvl], e) != K_TABLE) continue;
            uint64_t cpa = e & PFN_MASK;
            Node *nd = node_get(w, (int)lvl + 1, cpa, 1);
            if (!nd) break;
            if (nd->refs++ == 0 && (int)lvl + 1 < w->nlev - 1) {
                if (qn == qcap) {
                    uint64_t *nq = PyMem_Realloc(q, qcap * 2 * sizeof(uint64_t) * 2);
                    if (!nq) {
                        PyErr_NoMemory();
                        w->failed = 1;
                        break;
                    }
                    q = nq;
                    qcap *= 2;
                }
                q[2 * qn] = cpa;
                q[2 * qn + 1] = lvl + 1;
                qn++;
            }
        }
        Py_XDECREF(owner);
        if (w->failed) break;
    }
    PyMem_Free(q);
    return w->failed ? -1 : 0;
}

/* ---- output ------------------------------------------------------------------------------------ */

static int out_flush(W *w) {
    if (!w->write || w->out_n == 0) return 0;
    PyObject *s = w->binary ? PyBytes_FromStringAndSize(w->out, (Py_ssize_t)w->out_n)
                            : PyUnicode_DecodeASCII(w->out, (Py_ssize_t)w->out_n, NULL);
    w->out_n = 0;
    if (!s) {
        w->failed = 1;
        return -1;
    }
    PyObject *r = PyObject_CallOneArg(w->write, s);
    Py_DECREF(s);
    if (!r) {
        w->failed = 1;
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

static inline char *out_room(W *w, size_t n) {
    if (w->out_n + n > OUT_CHUNK && out_flush(w) < 0) return NULL;
    return w->out + w->out_n;
}

static void out_str(W *w, const char *s, size_t n) {
    if (n > OUT_CHUNK) { /* a marker name longer than a chunk: not from a kernel, but harmless */
        if (out_flush(w) < 0) return;
        while (n > 0 && !w->failed) {
            size_t k = n < OUT_CHUNK ? n : OUT_CHUNK;
            memcpy(w->out, s, k);
            w->out_n = k;
            out_flush(w);
            s += k;
            n -= k;
        }
        return;
    }
    char *p = out_room(w, n);
    if (!p) return;
    memcpy(p, s, n);
    w->out_n += n;
}

static void out_header(W *w, Py_ssize_t m) {
    out_str(w, "---[ ", 5);
    out_str(w, w->markers[m].name, (size_t)w->markers[m].name_len);
    out_str(w, " ]---\n", 6);
}

static char HEX2[512]; /* byte -> its two hex digits (filled at module init) */

static inline char *put_hex16(char *p, uint64_t v) {
    for (int i = 7; i >= 0; i--) {
        memcpy(p + 2 * i, HEX2 + 2 * (v & 255), 2);
        v >>= 8;
    }
    return p + 16;
}

/* printk_prot(): 30 columns of flags (blanks when not present), then the level's name */
static char *put_prot(char *p, uint64_t prot, int level) {
    if (!(prot & X_PRESENT)) {
        memset(p, ' ', 30);
        p += 30;
    } else {
        memcpy(p, prot & X_USER ? "USR " : "    ", 4), p += 4;
        memcpy(p, prot & X_RW ? "RW " : "ro ", 3), p += 3;
        memcpy(p, prot & X_PWT ? "PWT " : "    ", 4), p += 4;
        memcpy(p, prot & X_PCD ? "PCD " : "    ", 4), p += 4;
        /* bit 7 is PSE in upper levels and PAT in a PTE */
        memcpy(p, level <= 3 && (prot & X_PSE) ? "PSE " : "    ", 4), p += 4;
        int pat = (level == 4 && (prot & X_PSE)) || ((level == 2 || level == 3) && (prot & X_PAT_LARGE));
        memcpy(p, pat ? "PAT " : "    ", 4), p += 4;
        memcpy(p, prot & X_GLOBAL ? "GLB " : "    ", 4), p += 4;
        memcpy(p, prot & X_NX ? "NX " : "x  ", 3), p += 3;
    }
    memcpy(p, LEVEL_NAME[level], 3);
    p[3] = '\n';
    return p + 4;
}

static char *put_prot_cached(W *w, char *p, uint64_t prot, int level) {
    ProtText *c = &w->prot_cache[(prot ^ (prot >> 29) ^ (prot >> 52) ^ (uint64_t)level * 0x9E37u) & (PROT_CACHE - 1)];
    if (c->level != level || c->prot != prot) {
        put_prot(c->text, prot, level);
        c->prot = prot;
        c->level = level;
    }
    memcpy(p, c->text, PROT_TEXT);
    return p + PROT_TEXT;
}

/* One range line: "0x%016lx-0x%016lx   %9lu%c " and printk_prot() (or, not the kernel's, the
 * entry whose table the image lacks). */
static void out_line(W *w, uint64_t start, uint64_t end, uint64_t delta) {
    char *p = out_room(w, 160);
    if (!p) return;
    char *p0 = p;
    int unit = 0;
    while (!(delta & 1023) && unit < 6) { /* scaled_size(): the kernel's K/M/G loop */
        delta >>= 10;
        unit++;
    }
    *p++ = '0', *p++ = 'x';
    p = put_hex16(p, start);
    *p++ = '-', *p++ = '0', *p++ = 'x';
    p = put_hex16(p, end);
    /* "   %9lu" and the unit */
    char dec[24];
    int nd = 0;
    do {
        dec[nd++] = (char)('0' + delta % 10);
        delta /= 10;
    } while (delta);
    memset(p, ' ', 3 + (nd < 9 ? 9 - nd : 0));
    p += 3 + (nd < 9 ? 9 - nd : 0);
    while (nd) *p++ = dec[--nd];
    *p++ = UNITS[unit];
    *p++ = ' ';
    if (w->cur_klevel <= MISSING_BASE) {
        p += sprintf(p, "[table at PA 0x%llx not in image] %s\n", (unsigned long long)(w->cur_key & PFN_MASK),
                     LEVEL_NAME[MISSING_BASE - w->cur_klevel]);
    } else {
        p = put_prot_cached(w, p, w->cur_key, w->cur_klevel);
    }
    w->out_n += (size_t)(p - p0);
}

/* ---- note_page() ------------------------------------------------------------------------------- */

static inline uint64_t to_va(W *w, uint64_t off) { return off >= w->half ? off + w->high : off; }

/* The line from start_va to end_va under the current state: W+X accounting, then the text. */
static void line(W *w, uint64_t end_va) {
    uint64_t delta = end_va - w->start_va; /* modulo 2^64, as the kernel computes it */
    if (w->check_wx && (w->cur_eff & X_RW) && !(w->cur_eff & X_NX)) {
        w->wx_pages += delta / 4096;
        if ((long long)PyList_GET_SIZE(w->wx_list) < w->wx_max) {
            PyObject *t = Py_BuildValue("(KK)", (unsigned long long)w->start_va, (unsigned long long)end_va);
            if (!t || PyList_Append(w->wx_list, t) < 0) w->failed = 1;
            Py_XDECREF(t);
        } else {
            w->wx_dropped++;
        }
    }
    int max_lines = w->markers[w->marker].max_lines;
    if (!max_lines || w->lines < max_lines) {
        if (w->write) {
            out_line(w, w->start_va, end_va, delta);
            w->ranges_written++;
        }
    }
    w->lines++;
}

static void note(W *w, uint64_t off, int8_t klevel, uint64_t key, uint64_t eff) {
    if (!w->started) {
        w->started = 1;
        w->cur_klevel = klevel, w->cur_key = key, w->cur_eff = eff;
        w->start_va = 0; /* the kernel's first note_page() leaves start_address at 0 */
        w->marker = 0;
        w->lines = 0;
        if (w->write) out_header(w, 0);
        return;
    }
    uint64_t nxt = w->marker + 1 < w->nmarkers ? w->markers[w->marker + 1].off : UINT64_MAX;
    if (klevel == w->cur_klevel && key == w->cur_key && eff == w->cur_eff && off < nxt) return;
    uint64_t va = to_va(w, off);
    line(w, va);
    if (off >= nxt) {
        int max_lines = w->markers[w->marker].max_lines;
        if (max_lines && w->lines > max_lines && w->write) {
            long nskip = w->lines - max_lines;
            char buf[96];
            int k = snprintf(buf, sizeof buf, "... %ld entr%s skipped ... \n", nskip, nskip == 1 ? "y" : "ies");
            out_str(w, buf, (size_t)k);
        }
        w->marker++;
        w->lines = 0;
        if (w->write) out_header(w, w->marker);
    }
    w->start_va = va;
    w->cur_klevel = klevel, w->cur_key = key, w->cur_eff = eff;
}

/* A run [s, e) of equal entries: note_page() at its first entry inside each walked range, and at
 * each later entry where an address marker fires (a same-state entry is otherwise ignored). */
static void process(W *w, const Run *r, uint64_t e) {
    if (r->klevel == SKIP_KLEVEL) return; /* the kernel neither reports nor descends into these */
    uint64_t eff = r->val == 0 ? 0 : r->eff;
    uint64_t sp = 1ULL << w->shift[r->hw];
    for (Py_ssize_t i = 0; i < w->nranges; i++) {
        uint64_t rs = w->ranges[i].start, re = w->ranges[i].end;
        if (re <= r->off || rs >= e) continue;
        uint64_t a = r->off > rs ? r->off : rs, b = e < re ? e : re;
        note(w, a, r->klevel, r->key, eff);
        while (w->marker + 1 < w->nmarkers) {
            uint64_t q = w->markers[w->marker + 1].off;
            if (q <= a) q = a + 1;
            uint64_t p = (q + sp - 1) & ~(sp - 1);
            if (p >= b || p < q) break;
            note(w, p, r->klevel, r->key, eff);
            a = p;
        }
        if (w->failed) return;
    }
}

static inline int same_run(const Run *a, const Run *b) {
    return a->klevel == b->klevel && a->key == b->key && a->eff == b->eff && a->zero == b->zero;
}

/* ---- the walk ------------------------------------------------------------------------------------ */

static void emit(W *w, Rec *rec, const Run *r) {
    if (rec) {
        if (rec->n && same_run(&rec->runs[rec->n - 1], r)) return;
        if (rec->n >= CACHE_TABLE_RUNS) {
            rec->overflow = 1;
            return;
        }
        if (rec->n == rec->cap) {
            size_t ncap = rec->cap ? rec->cap * 2 : 64;
            Run *nr = PyMem_Realloc(rec->runs, ncap * sizeof(Run));
            if (!nr) {
                PyErr_NoMemory();
                w->failed = 1;
                return;
            }
            rec->runs = nr;
            rec->cap = ncap;
        }
        rec->runs[rec->n++] = *r;
        return;
    }
    if (w->have_pending && same_run(&w->pending, r)) return;
    if (w->have_pending) process(w, &w->pending, r->off);
    w->pending = *r;
    w->have_pending = 1;
    if (w->max_runs && ++w->emitted > w->max_runs) {
        w->overflowed = 1; /* the output so far is written, then OverflowError */
        w->failed = 1;
    }
}

static void walk(W *w, int lvl, const uint8_t *t, uint64_t base, uint64_t cum, Rec *rec);

static void replay(W *w, Node *nd, uint64_t base, uint64_t cum, Rec *rec) {
    for (size_t k = 0; k < nd->nruns && !w->failed && !(rec && rec->overflow); k++) {
        Run r = nd->runs[k];
        r.off += base;
        r.eff = r.zero ? 0 : fold(cum, r.eff);
        emit(w, rec, &r);
    }
}

/* Record the run list of a shared table once (offsets from its start, permissions unfolded). */
static void record(W *w, Node *nd, int lvl, const uint8_t *t) {
    if (w->cached_runs >= CACHE_RUNS) {
        nd->state = T_UNCACHEABLE;
        return;
    }
    Rec r = {0};
    walk(w, lvl, t, 0, PERM_IDENTITY, &r);
    if (w->failed || r.overflow || w->cached_runs + r.n > CACHE_RUNS) {
        PyMem_Free(r.runs);
        nd->state = T_UNCACHEABLE;
        return;
    }
    nd->runs = r.runs;
    nd->nruns = r.n;
    nd->state = T_CACHED;
    w->cached_runs += r.n;
}

static void walk(W *w, int lvl, const uint8_t *t, uint64_t base, uint64_t cum, Rec *rec) {
    int role = w->role[lvl], shift = w->shift[lvl];
    Run r;
    r.hw = (int8_t)lvl;
    if (lvl == w->nlev - 1) {
        r.klevel = (int8_t)role;
        for (int j = 0; j < ENTRIES; j++) {
            uint64_t e = rd64(t + 8 * j);
            uint64_t key = e & FLAGS_MASK, eff = e ? fold(cum, e & PERM_BITS) : 0;
            if (j && key == r.key && eff == r.eff && (e == 0) == r.zero) continue; /* the run goes on */
            r.off = base + ((uint64_t)j << shift);
            r.val = e, r.key = key, r.eff = eff, r.zero = e == 0;
            emit(w, rec, &r);
            if (w->failed || (rec && rec->overflow)) return;
        }
        if (++w->bottom_read >= RELEASE_TABLES) {
            release_pages(w);
            w->bottom_read = 0;
        }
        return;
    }
    for (int j = 0; j < ENTRIES; j++) {
        uint64_t e = rd64(t + 8 * j);
        r.off = base + ((uint64_t)j << shift);
        r.zero = 0;
        switch (classify(role, e)) {
        case K_HOLE:
            r.klevel = (int8_t)w->hole_depth[lvl], r.val = 0, r.key = 0, r.eff = 0, r.zero = 1;
            emit(w, rec, &r);
            break;
        case K_LEAF:
            r.klevel = (int8_t)role, r.val = e, r.key = e & FLAGS_MASK, r.eff = fold(cum, e & PERM_BITS);
            emit(w, rec, &r);
            break;
        case K_SKIP:
            r.klevel = SKIP_KLEVEL, r.val = e, r.key = 0, r.eff = fold(cum, 0);
            emit(w, rec, &r);
            break;
        default: {
            uint64_t cpa = e & PFN_MASK;
            uint64_t down = fold(cum, e & PERM_BITS);
            Node *nd = node_get(w, lvl + 1, cpa, 0);
            if (nd && nd->state == T_CACHED) { /* a shared table seen before: no read, no walk */
                replay(w, nd, r.off, down, rec);
                break;
            }
            PyObject *owner;
            const uint8_t *ct = table_at(w, lvl + 1, cpa, &owner);
            if (w->failed) return;
            if (!ct) { /* not the kernel's: the image lacks the table this entry points to */
                r.klevel = (int8_t)(MISSING_BASE - role), r.val = e, r.key = e, r.eff = fold(cum, 0);
                emit(w, rec, &r);
                break;
            }
            if (nd && nd->refs >= 2 && nd->state != T_UNCACHEABLE) {
                if (nd->state == T_UNKNOWN) record(w, nd, lvl + 1, ct);
                if (nd->state == T_CACHED) {
                    replay(w, nd, r.off, down, rec);
                    Py_XDECREF(owner);
                    break;
                }
            }
            if (!w->failed) walk(w, lvl + 1, ct, r.off, down, rec);
            Py_XDECREF(owner);
        }
        }
        if (w->failed || (rec && rec->overflow)) return;
    }
}

/* ---- the Python entry point ------------------------------------------------------------------------ */

static int seq_u64(PyObject *seq, Py_ssize_t i, Py_ssize_t j, uint64_t *v) {
    PyObject *item = PySequence_GetItem(seq, i);
    if (!item) return -1;
    PyObject *x = PySequence_GetItem(item, j);
    Py_DECREF(item);
    if (!x) return -1;
    unsigned long long u = PyLong_AsUnsignedLongLong(x);
    Py_DECREF(x);
    if (u == (unsigned long long)-1 && PyErr_Occurred()) return -1;
    *v = u;
    return 0;
}

PyDoc_STRVAR(x86_ptdump_doc,
"x86_ptdump(memory, root_pa, levels, va_bits, ranges, markers, write, check_wx, max_runs, wx_max,\n"
"           binary)\n"
"\n"
"The x86-64 ptdump of the table at root_pa. memory: (buffer, segments[(pa, size, file_offset)],\n"
"release) or a callable pa -> 4096 bytes | None. levels: [(shift, role, hole_depth)] top-down.\n"
"ranges: [(start, end)] and markers: [(offset, name, max_lines)] in the root's offset space.\n"
"write: a callable taking text chunks (bytes if binary, else str), or None (W+X accounting\n"
"only). Returns (ranges_written,\n"
"wx_pages, wx_ranges, wx_dropped); raises OverflowError past max_runs runs (0: no limit).");

static PyObject *x86_ptdump(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *memory, *levels, *ranges, *markers, *write;
    unsigned long long root, max_runs;
    long long wx_max;
    int va_bits, check_wx;
    int binary;
    if (!PyArg_ParseTuple(args, "OKOiOOOpKLp", &memory, &root, &levels, &va_bits, &ranges, &markers, &write,
                          &check_wx, &max_runs, &wx_max, &binary))
        return NULL;
    W *w = PyMem_Calloc(1, sizeof(W));
    if (!w) return PyErr_NoMemory();
    w->fd = -1;
    for (int i = 0; i < PROT_CACHE; i++) w->prot_cache[i].level = -1;
    Py_buffer view = {0};
    int have_view = 0;
    PyObject *result = NULL;
    if (va_bits < 12 || va_bits > 63) {
        PyErr_SetString(PyExc_ValueError, "va_bits out of range");
        goto done;
    }
    w->top = 1ULL << va_bits;
    w->half = w->top >> 1;
    w->high = (uint64_t)0 - w->top;
    w->nlev = (int)PySequence_Size(levels);
    if (w->nlev < 1 || w->nlev > MAX_LEVELS) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "1 to 5 levels");
        goto done;
    }
    for (int i = 0; i < w->nlev; i++) {
        uint64_t s, ro, hd;
        if (seq_u64(levels, i, 0, &s) < 0 || seq_u64(levels, i, 1, &ro) < 0 || seq_u64(levels, i, 2, &hd) < 0)
            goto done;
        if (s > 62 || ro > 4 || hd > 4) {
            PyErr_SetString(PyExc_ValueError, "bad level description");
            goto done;
        }
        w->shift[i] = (int)s, w->role[i] = (int)ro, w->hole_depth[i] = (int)hd;
    }
    if (PyCallable_Check(memory)) {
        w->reader = memory;
    } else {
        PyObject *buf, *segs;
        int release;
        if (!PyArg_ParseTuple(memory, "OOp", &buf, &segs, &release)) goto done;
        if (PyLong_Check(buf)) {
            w->fd = (int)PyLong_AsLong(buf);
            if (w->fd < 0) {
                if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "bad file descriptor");
                goto done;
            }
            for (int l = 0; l <= MAX_LEVELS; l++) {
                w->win[l].buf = PyMem_Malloc(READ_AHEAD * TABLE_BYTES);
                w->win[l].last_pa = UINT64_MAX - TABLE_BYTES; /* no table read yet */
                if (!w->win[l].buf) {
                    PyErr_NoMemory();
                    goto done;
                }
            }
        } else {
            if (PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE) < 0) goto done;
            have_view = 1;
            w->buf = view.buf;
            w->buf_len = view.len;
        }
        w->release = release;
        w->nseg = PySequence_Size(segs);
        if (w->nseg < 0) goto done;
        w->seg_pa = PyMem_Calloc((size_t)w->nseg + 1, 8);
        w->seg_end = PyMem_Calloc((size_t)w->nseg + 1, 8);
        w->seg_off = PyMem_Calloc((size_t)w->nseg + 1, 8);
        if (!w->seg_pa || !w->seg_end || !w->seg_off) {
            PyErr_NoMemory();
            goto done;
        }
        for (Py_ssize_t i = 0; i < w->nseg; i++) {
            uint64_t pa, n, off;
            if (seq_u64(segs, i, 0, &pa) < 0 || seq_u64(segs, i, 1, &n) < 0 || seq_u64(segs, i, 2, &off) < 0) goto done;
            if (i > 0 && pa < w->seg_pa[i - 1]) {
                PyErr_SetString(PyExc_ValueError, "segments must be sorted");
                goto done;
            }
            w->seg_pa[i] = pa, w->seg_end[i] = pa + n < pa ? UINT64_MAX : pa + n, w->seg_off[i] = (int64_t)off;
        }
    }
    w->nranges = PySequence_Size(ranges);
    w->nmarkers = PySequence_Size(markers);
    if (w->nranges < 0 || w->nmarkers < 1) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "at least one marker");
        goto done;
    }
    w->ranges = PyMem_Calloc((size_t)w->nranges + 1, sizeof(Range));
    w->markers = PyMem_Calloc((size_t)w->nmarkers, sizeof(Marker));
    if (!w->ranges || !w->markers) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < w->nranges; i++)
        if (seq_u64(ranges, i, 0, &w->ranges[i].start) < 0 || seq_u64(ranges, i, 1, &w->ranges[i].end) < 0) goto done;
    for (Py_ssize_t i = 0; i < w->nmarkers; i++) {
        uint64_t ml;
        if (seq_u64(markers, i, 0, &w->markers[i].off) < 0 || seq_u64(markers, i, 2, &ml) < 0) goto done;
        w->markers[i].max_lines = (int)ml;
        PyObject *m = PySequence_GetItem(markers, i);
        if (!m) goto done;
        PyObject *name = PySequence_GetItem(m, 1);
        Py_DECREF(m);
        if (!name) goto done;
        /* the names live as long as the caller's list holds them (borrowed through the UTF-8 cache) */
        w->markers[i].name = PyUnicode_AsUTF8AndSize(name, &w->markers[i].name_len);
        Py_DECREF(name);
        if (!w->markers[i].name) goto done;
    }
    w->check_wx = check_wx;
    w->max_runs = max_runs;
    w->wx_max = wx_max;
    w->wx_list = PyList_New(0);
    if (!w->wx_list) goto done;
    if (write != Py_None) {
        w->write = write;
        w->binary = binary;
        w->out = PyMem_Malloc(OUT_CHUNK);
        if (!w->out) {
            PyErr_NoMemory();
            goto done;
        }
    }
    PyObject *owner;
    const uint8_t *t = table_at(w, 0, root, &owner);
    if (w->failed) goto done;
    if (!t) {
        PyErr_Format(PyExc_LookupError, "the root table at PA %#llx is not in the image", root);
        goto done;
    }
    if (count_refs(w, root) < 0) {
        Py_XDECREF(owner);
        goto done;
    }
    walk(w, 0, t, 0, PERM_IDENTITY, NULL);
    Py_XDECREF(owner);
    if (w->overflowed) {
        w->failed = 0;
        if (out_flush(w) == 0)
            PyErr_Format(PyExc_OverflowError, "more than %llu runs", (unsigned long long)w->max_runs);
        goto done;
    }
    if (w->failed) goto done;
    if (w->have_pending) process(w, &w->pending, w->top);
    if (w->started && !w->failed) line(w, 0); /* note_page(st, 0, -1, 0): the last line ends at 0 */
    if (w->failed || out_flush(w) < 0) goto done;
    release_pages(w);
    result = Py_BuildValue("(LKOL)", w->ranges_written, (unsigned long long)w->wx_pages, w->wx_list, w->wx_dropped);
done:
    if (have_view) PyBuffer_Release(&view);
    for (size_t i = 0; i < w->nodes_cap; i++) PyMem_Free(w->nodes[i].runs);
    PyMem_Free(w->nodes);
    PyMem_Free(w->seg_pa);
    PyMem_Free(w->seg_end);
    PyMem_Free(w->seg_off);
    PyMem_Free(w->ranges);
    PyMem_Free(w->markers);
    PyMem_Free(w->out);
    for (int l = 0; l <= MAX_LEVELS; l++) PyMem_Free(w->win[l].buf);
    Py_XDECREF(w->wx_list);
    PyMem_Free(w);
    return result;
}

static PyMethodDef methods[] = {
    {"x86_ptdump", x86_ptdump, METH_VARARGS, x86_ptdump_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "pagewalk._x86dump", "The x86-64 ptdump walk and text, compiled (see _x86dump.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__x86dump(void) {
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 256; i++) HEX2[2 * i] = hex[i >> 4], HEX2[2 * i + 1] = hex[i & 15];
    return PyModule_Create(&module);
}
