/**
 * @file dshm_check.c
 * @brief stat() and check(): statistics, and a walk of the whole file
 *        that verifies its structure and writes nothing.
 *
 * Layer 8: calls handles (the lock for a handle), reads (backoff), the
 * walker and the lock's word.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>

#include "dshm_base.h"
#include "dshm_walk.h"
#include "dshm_meta.h"
#include "dshm_hash.h"
#include "dshm_index.h"
#include "dshm_lock.h"
#include "dshm_handle.h"
#include "dshm_read.h"

static int stat_unguarded(dshm_db *db, dshm_stat_t *st) {
    dshm_env *env;
    int rc = dshm_enter_checked(db, &env, st ? 0 : DSHM_INVALID);
    if (rc)
        return rc;
    dshm_header *hd = DSHM_HDR(env);
    memset(st, 0, sizeof *st);
    st->st_count = atomic_load_explicit(&hd->hd_count, memory_order_acquire);
    st->st_file_size = atomic_load_explicit(&hd->hd_file_size, memory_order_acquire);
    /* Allocator fields are the writer's; read them as a racy snapshot. */
    st->st_top = *(volatile uint64_t *)&hd->hd_top;
    st->st_live_bytes = *(volatile uint64_t *)&hd->hd_live_bytes;
    st->st_free_bytes = *(volatile uint64_t *)&hd->hd_free_bytes;
    st->st_buckets = *(volatile uint64_t *)&hd->hd_buckets;
    st->st_overflow = *(volatile uint64_t *)&hd->hd_overflow;
    st->st_recoveries = *(volatile uint64_t *)&hd->hd_recoveries;
    st->st_max_bytes = *(volatile uint64_t *)&hd->hd_max_bytes;
    st->st_evictions = *(volatile uint64_t *)&hd->hd_evictions;
    st->st_expired = *(volatile uint64_t *)&hd->hd_expired;
    st->st_depth = DSHM_DIR_DEPTH(atomic_load_explicit(&hd->hd_dir, memory_order_acquire));
    st->st_slots = DSHM_SLOTS;
    st->st_commit = atomic_load_explicit(&hd->hd_commit, memory_order_acquire);
    st->st_format = hd->hd_format;
    st->st_page_size = hd->hd_bucket_size;
    st->st_lock_pid = atomic_load_explicit(&hd->hd_lock_pid, memory_order_relaxed);
    st->st_read_retries = atomic_load_explicit(&db->db_retries, memory_order_relaxed);
    st->st_read_fallbacks = atomic_load_explicit(&db->db_fallbacks, memory_order_relaxed);
    st->st_reopens = atomic_load_explicit(&db->db_reopens, memory_order_relaxed);
    st->st_map_size = env->ev_resv;
    uint64_t since = atomic_load_explicit(&hd->hd_lock_since, memory_order_relaxed), now = dshm_now_ns();
    st->st_lock_held_ns = st->st_lock_pid && since && since <= now ? now - since : 0;
    st->st_waiters = atomic_load_explicit(&hd->hd_waiters, memory_order_relaxed) & 1u;
#define C_(f) atomic_load_explicit(&db->f, memory_order_relaxed)
    st->st_writes = C_(db_writes);
    st->st_batches = C_(db_batches);
    st->st_batch_ops = C_(db_batch_ops);
    st->st_lock_waits = C_(db_lock_waits);
    st->st_lock_wait_ns = C_(db_lock_wait_ns);
    st->st_waits = C_(db_waits);
    st->st_wakeups = C_(db_wakeups);
    st->st_multi_retries = C_(db_multi_retries);
#undef C_
    dshm_leave(db);
    return 0;
}

typedef struct report { char *buf; size_t cap, len; int64_t problems; bool locked; } report;

static void problem(report *rp, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(report *rp, const char *fmt, ...) {
    rp->problems++;
    if (!rp->buf || rp->len + 1 >= rp->cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(rp->buf + rp->len, rp->cap - rp->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        rp->len = rp->len + (size_t)n < rp->cap ? rp->len + (size_t)n : rp->cap - 1;
    if (rp->len + 1 < rp->cap)
        rp->buf[rp->len++] = '\n', rp->buf[rp->len] = 0;
}

typedef struct cext { uint64_t off, size; const char *what; } cext;

/* A key of a bucket chain, for finding a key filed twice. */
typedef struct ckey { uint64_t h, r; } ckey;

static int cmp_ckey(const void *a, const void *b) {
    const ckey *x = a, *y = b;
    return x->h < y->h ? -1 : x->h > y->h ? 1 : x->r < y->r ? -1 : x->r > y->r;
}

/* Report every key filed twice in keys[0..n) (records already checked). */
static void check_dups(dshm_env *env, report *rp, uint64_t b, ckey *keys, size_t n) {
    if (n < 2)
        return;   /* keys may be NULL: qsort must not see it */
    qsort(keys, n, sizeof *keys, cmp_ckey);
    for (size_t i = 0; i < n; i++) {
        for (size_t j = i + 1; j < n && keys[j].h == keys[i].h; j++) {
            const dshm_rec *x = DSHM_AT(env, keys[i].r), *y = DSHM_AT(env, keys[j].r);
            if (keys[i].r == keys[j].r ||
                (x->rc_klen == y->rc_klen &&
                 memcmp((const char *)x + DSHM_REC_HDR, (const char *)y + DSHM_REC_HDR, x->rc_klen) == 0)) {
                problem(rp, "bucket %" PRIu64 ": a key is filed twice (records %" PRIu64 " and %" PRIu64 ")",
                        b, keys[i].r, keys[j].r);
                break;
            }
        }
    }
}

static int cmp_cext(const void *a, const void *b) {
    const cext *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

/* Does [off, off+size) overlap an extent of the sorted ex[0..n)? */
static const cext *overlap(const cext *ex, size_t n, uint64_t off, uint64_t size) {
    size_t lo = 0, hi = n;
    while (lo < hi) {   /* the first extent ending after off */
        size_t mid = lo + (hi - lo) / 2;
        if (ex[mid].off + ex[mid].size <= off)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && ex[lo].off < off + size ? &ex[lo] : NULL;
}

/* The commit protocol (dshm_commit.c): a valid meta, and what the newest
 * one references whole, within the file, of an older period than the
 * current one, and on no free list (free space would be reused before the
 * next commit: a power loss then loses what it acknowledged). `free_ex`:
 * the free blocks and pooled pages, sorted. */
static void check_commit(dshm_env *env, report *rp, uint64_t limit, const cext *free_ex, size_t nfree) {
    dshm_header *hd = DSHM_HDR(env);
    dshm_meta m;
    if (hd->hd_volatile)
        return;   /* a store on tmpfs keeps no commits (its metas are stale by design) */
    if (!dshm_meta_newest(hd, &m, NULL)) {
        problem(rp, "header: no valid commit meta (a power loss would leave the file unopenable)");
        return;
    }
    if (m.mt_gen >= hd->hd_gen)
        problem(rp, "commit %" PRIu64 ": period %" PRIu64 " not before the current one (%" PRIu64 ")",
                m.mt_seq, m.mt_gen, hd->hd_gen);
    if (hd->hd_dir_gen > hd->hd_gen)
        problem(rp, "header: directory of period %" PRIu64 ", after the current one (%" PRIu64 ")",
                hd->hd_dir_gen, hd->hd_gen);
    if (m.mt_dir == 0)
        return;   /* the empty store of a new file: references nothing */
    uint64_t top = m.mt_top < limit ? m.mt_top : limit;
    if (m.mt_file_size > limit || m.mt_top > m.mt_file_size) {
        problem(rp, "commit %" PRIu64 ": file size %" PRIu64 " or top %" PRIu64 " past the file (%" PRIu64 " bytes)",
                m.mt_seq, m.mt_file_size, m.mt_top, limit);
        return;
    }
    dshm_dirwalk w;
    if (dshm_dir_start(&w, env, m.mt_dir, top)) {
        problem(rp, "commit %" PRIu64 ": directory at %" PRIu64 " is out of bounds", m.mt_seq, DSHM_DIR_OFF(m.mt_dir));
        return;
    }
    const cext *o;
#define PROTECTED(off_, size_, what_) do {         if ((o = overlap(free_ex, nfree, (off_), (size_))) != NULL)             problem(rp, "commit %" PRIu64 ": its %s at %" PRIu64 " overlaps the %s at %" PRIu64                     " (it could be reused before the next commit)", m.mt_seq, (what_), (uint64_t)(off_),                     o->what, o->off); } while (0)
    PROTECTED(DSHM_DIR_OFF(m.mt_dir), dshm_dir_bytes(w.dw_gd), "directory");
    int more;
    while ((more = dshm_dir_next_bucket(&w)) != 0) {
        if (more < 0) {
            problem(rp, "commit %" PRIu64 ": directory[%" PRIu64 "] names a bad bucket %" PRIu64,
                    m.mt_seq, w.dw_i, w.dw_bucket);
            continue;
        }
        dshm_chain ch;
        uint64_t page;
        int link;
        dshm_chain_start(&ch, env, w.dw_bucket, top);
        while ((link = dshm_chain_next(&ch, &page)) != 0) {
            if (link < 0) {
                problem(rp, "commit %" PRIu64 ": bucket %" PRIu64 ": overflow link %" PRIu64 " is out of bounds",
                        m.mt_seq, w.dw_bucket, page);
                break;
            }
            const dshm_bucket *pg = DSHM_AT(env, page);
            if (pg->bk_gen > m.mt_gen)
                problem(rp, "commit %" PRIu64 ": page %" PRIu64 " is of a later period (%" PRIu64 ")",
                        m.mt_seq, page, pg->bk_gen);
            PROTECTED(page, DSHM_BUCKET_SIZE, "bucket page");
            for (unsigned s = 0; s < DSHM_SLOTS; s++) {
                uint64_t r = atomic_load_explicit(&pg->bk_slots[s].sl_rec, memory_order_relaxed);
                if (!r)
                    continue;
                const dshm_rec *rec = dshm_rec_sane(env, r, top);
                if (!rec) {
                    problem(rp, "commit %" PRIu64 ": page %" PRIu64 " slot %u: record %" PRIu64 " is out of bounds",
                            m.mt_seq, page, s, r);
                    continue;
                }
                if (rec->rc_gen > m.mt_gen)
                    problem(rp, "commit %" PRIu64 ": record %" PRIu64 " is of a later period (%" PRIu64 ")",
                            m.mt_seq, r, rec->rc_gen);
                PROTECTED(r, dshm_rec_size(rec->rc_klen, rec->rc_vlen), "record");
            }
        }
    }
#undef PROTECTED
}

/* Verify the whole structure, writing nothing to the file: under the
 * writer lock for a stable view, or without it (a racy view: then every
 * bound is also held to this mapping, and to the file size). */
static int64_t check_locked(dshm_env *env, report *rp) {
    dshm_header *hd = DSHM_HDR(env);
    uint64_t limit = atomic_load_explicit(&hd->hd_file_size, memory_order_acquire);
    if (limit > env->ev_resv)
        limit = env->ev_resv;
    /* A file cut under the store: what lies past its end is lost (and
     * would fault, or read as zeros in its last page). */
    struct stat st;
    if (fstat(env->ev_fd, &st) == 0 && (uint64_t)st.st_size < limit) {
        problem(rp, "file: %" PRIu64 " bytes, the header says %" PRIu64 ": it was cut, "
                "and what lay past its end is lost", (uint64_t)st.st_size, limit);
        limit = (uint64_t)st.st_size & ~(uint64_t)(DSHM_ALIGN - 1);
    }
    uint64_t top = *(volatile uint64_t *)&hd->hd_top;
    uint64_t dir = atomic_load_explicit(&hd->hd_dir, memory_order_relaxed);
    unsigned gd = DSHM_DIR_DEPTH(dir);
    cext *ex = NULL;
    size_t n = 0, cap = 0;
    ckey *keys = NULL;   /* one bucket chain's keys, for check_dups */
    size_t nk = 0, kcap = 0;
#define ADD(o, s, w) do { \
        if (n == cap) { cap = cap ? cap * 2 : 4096; cext *v_ = realloc(ex, cap * sizeof *v_); \
                        if (!v_) { free(ex); free(keys); return -ENOMEM; } ex = v_; } \
        ex[n].off = (o); ex[n].size = (s); ex[n].what = (w); n++; } while (0)
    if (top > limit || top < DSHM_HEADER_SIZE) {
        problem(rp, "header: top %" PRIu64 " outside the file (%" PRIu64 " bytes)", top, limit);
        if (top > limit)
            top = limit;   /* what lies past the file is never touched */
    }
    dshm_dirwalk w;
    if (dshm_dir_start(&w, env, dir, limit)) {
        problem(rp, "header: directory at %" PRIu64 " depth %u is out of bounds", DSHM_DIR_OFF(dir), gd);
        free(ex);
        return rp->problems;
    }
    ADD(DSHM_DIR_OFF(dir), dshm_dir_bytes(gd), "directory");
    if (hd->hd_batch && rp->locked)
        problem(rp, "header: a batch journal is pending (a writer died; the next writer finishes or drops it)");
    if (hd->hd_intent_op != DSHM_INTENT_NONE)
        problem(rp, "header: an unfinished split is recorded (a writer died; the next writer repairs it)");
    if (atomic_load_explicit(&hd->hd_struct_seq, memory_order_relaxed) & 1)
        problem(rp, "header: directory change in progress (a writer died; the next writer repairs it)");
    uint64_t count = 0, live = 0;
    int more;
    while ((more = dshm_dir_next(&w)) != 0) {
        uint64_t i = w.dw_i, b = w.dw_bucket;
        if (more < 0 && w.dw_bad == DSHM_DW_OFFSET) {
            problem(rp, "directory[%" PRIu64 "]: bucket offset %" PRIu64 " is out of bounds", i, b);
            continue;
        }
        dshm_bucket *bk = DSHM_AT(env, b);
        unsigned ld = atomic_load_explicit(&bk->bk_depth, memory_order_relaxed);
        uint64_t prefix = atomic_load_explicit(&bk->bk_prefix, memory_order_relaxed);
        if (atomic_load_explicit(&bk->bk_kind, memory_order_relaxed) != DSHM_BK_PRIMARY) {
            problem(rp, "bucket %" PRIu64 ": not a primary bucket page", b);
            continue;
        }
        if (more < 0) {   /* DSHM_DW_DEPTH */
            problem(rp, "bucket %" PRIu64 ": local depth %u above global depth %u", b, ld, gd);
            continue;
        }
        uint64_t idx_prefix = gd ? (i << (64 - gd)) : 0;
        uint64_t mask = ld ? ~(uint64_t)0 << (64 - ld) : 0;
        if ((idx_prefix & mask) != prefix)
            problem(rp, "directory[%" PRIu64 "]: bucket %" PRIu64 " covers another hash prefix", i, b);
        if (!w.dw_first)
            continue;
        if (atomic_load_explicit(&bk->bk_seq, memory_order_relaxed) & 1)
            problem(rp, "bucket %" PRIu64 ": change in progress (a writer died; the next writer repairs it)", b);
        dshm_chain ch;
        uint64_t page;
        int link;
        nk = 0;
        dshm_chain_start(&ch, env, b, limit);
        while ((link = dshm_chain_next(&ch, &page)) != 0) {
            if (link < 0) {
                problem(rp, "bucket %" PRIu64 ": overflow link %" PRIu64 " is out of bounds", b, page);
                break;
            }
            dshm_bucket *pg = DSHM_AT(env, page);
            ADD(page, DSHM_BUCKET_SIZE, page == b ? "bucket" : "overflow page");
            uint32_t used = 0;
            for (unsigned s = 0; s < DSHM_SLOTS; s++) {
                uint64_t r = atomic_load_explicit(&pg->bk_slots[s].sl_rec, memory_order_relaxed);
                if (!r)
                    continue;
                used++;
                uint64_t h = atomic_load_explicit(&pg->bk_slots[s].sl_hash, memory_order_relaxed);
                if (r % DSHM_ALIGN || !dshm_in(r, DSHM_REC_HDR, top)) {
                    problem(rp, "page %" PRIu64 " slot %u: record offset %" PRIu64 " is out of bounds", page, s, r);
                    continue;
                }
                if (!dshm_slot_reachable(pg, s))
                    problem(rp, "page %" PRIu64 " slot %u: not reachable from its home slot %u (a probe stops "
                                "at an empty slot before it)", page, s, (unsigned)(h % DSHM_SLOTS));
                const dshm_rec *rec = dshm_rec_sane(env, r, top);
                if (!rec) {
                    const dshm_rec *bad = DSHM_AT(env, r);   /* its header is inside (checked above) */
                    problem(rp, "record %" PRIu64 ": lengths %u/%" PRIu64 " run past the end", r, bad->rc_klen, bad->rc_vlen);
                    continue;
                }
                ADD(r, dshm_rec_size(rec->rc_klen, rec->rc_vlen), "record");
                live += dshm_rec_size(rec->rc_klen, rec->rc_vlen);
                if (nk == kcap) {
                    kcap = kcap ? kcap * 2 : DSHM_SLOTS;
                    ckey *v = realloc(keys, kcap * sizeof *v);
                    if (!v) {
                        free(keys);
                        free(ex);
                        return -ENOMEM;
                    }
                    keys = v;
                }
                keys[nk].h = h;
                keys[nk++].r = r;
                uint64_t kh = dshm_key_hash(hd, (const char *)rec + DSHM_REC_HDR, rec->rc_klen);
                if (kh != h)
                    problem(rp, "record %" PRIu64 ": key does not hash to its slot's hash", r);
                else if ((h & mask) != prefix)
                    problem(rp, "record %" PRIu64 ": filed in the wrong bucket", r);
            }
            if (used != atomic_load_explicit(&pg->bk_count, memory_order_relaxed))
                problem(rp, "page %" PRIu64 ": count says %u, %u slots used", page,
                        atomic_load_explicit(&pg->bk_count, memory_order_relaxed), used);
            count += used;
        }
        check_dups(env, rp, b, keys, nk);
    }
    free(keys);
    keys = NULL;
    if (count != atomic_load_explicit(&hd->hd_count, memory_order_relaxed))
        problem(rp, "header: count says %" PRIu64 ", %" PRIu64 " keys found", atomic_load_explicit(&hd->hd_count, memory_order_relaxed), count);
    uint64_t max = *(volatile uint64_t *)&hd->hd_max_bytes;
    if (max && live > max)
        problem(rp, "cache: the records hold %" PRIu64 " bytes, over the cap of %" PRIu64, live, max);
    /* Free lists: every block inside the allocated space, bounded walks. */
    uint64_t free_bytes = 0;
    for (unsigned c = 0; c < DSHM_NSMALL + DSHM_NLARGE; c++) {
        uint64_t off = c < DSHM_NSMALL ? hd->hd_small[c] : hd->hd_large[c - DSHM_NSMALL];
        for (uint64_t steps = 0; off; steps++) {
            if (off % DSHM_ALIGN || !dshm_in(off, sizeof(dshm_freeblk), top) || steps > top / DSHM_ALIGN) {
                problem(rp, "free list %u: block %" PRIu64 " is out of bounds", c, off);
                break;
            }
            dshm_freeblk *f = DSHM_AT(env, off);
            if (f->fr_size < DSHM_ALIGN || f->fr_size % DSHM_ALIGN || !dshm_in(off, f->fr_size, top)) {
                problem(rp, "free list %u: block %" PRIu64 " has a bad size %" PRIu64, c, off, f->fr_size);
                break;
            }
            ADD(off, f->fr_size, "free block");
            free_bytes += f->fr_size;
            off = f->fr_next;
        }
    }
    for (uint64_t off = hd->hd_bucket_free, steps = 0; off; steps++) {
        if (off % 64 || !dshm_in(off, DSHM_BUCKET_SIZE, top) || steps > top / DSHM_BUCKET_SIZE) {
            problem(rp, "bucket pool: page %" PRIu64 " is out of bounds", off);
            break;
        }
        ADD(off, DSHM_BUCKET_SIZE, "pooled page");
        off = atomic_load_explicit(&((dshm_bucket *)DSHM_AT(env, off))->bk_next, memory_order_relaxed);
    }
    if (free_bytes != hd->hd_free_bytes)
        problem(rp, "header: free bytes say %" PRIu64 ", lists hold %" PRIu64, hd->hd_free_bytes, free_bytes);
    qsort(ex, n, sizeof *ex, cmp_cext);
    for (size_t i = 1; i < n; i++)
        if (ex[i - 1].off + ex[i - 1].size > ex[i].off)
            problem(rp, "%s at %" PRIu64 " overlaps %s at %" PRIu64, ex[i - 1].what, ex[i - 1].off,
                    ex[i].what, ex[i].off);
    /* The free space alone (the same "what" strings), for check_commit. */
    size_t nf = 0;
    for (size_t i = 0; i < n; i++)
        if (ex[i].what[0] == 'f' || ex[i].what[0] == 'p')   /* "free block", "pooled page" */
            ex[nf++] = ex[i];
    if (rp->locked)   /* a racy view may see a commit half-made */
        check_commit(env, rp, limit, ex, nf);
    free(ex);
#undef ADD
    return rp->problems;
}

/* Problems a read-only handle reports instead of repairing them: a repair
 * owed to the store. `unusable`: the lock could not be taken for another
 * reason (an unusable mutex). */
static void owed_problems(dshm_env *env, report *rp, bool unusable) {
    dshm_header *hd = DSHM_HDR(env);
    uint32_t w;
    bool known = dshm_lock_word(hd, &w);
    if (known && (w & DSHM_LOCK_OWNER_DIED))
        problem(rp, "writer lock: its holder died; a repair is owed "
                    "(a handle that may write the file repairs it when it takes the lock)");
    else if (known && env->ev_ghost_lock && w == env->ev_ghost_lock)
        problem(rp, "writer lock: held by a process that no longer exists; a repair is owed "
                    "(a handle that may write the file, opened with no other handle open, repairs it)");
    else if (unusable && dshm_lock_damaged(hd))
        problem(rp, "writer lock: its bytes are damaged "
                    "(a handle that may write the file, opened with no other handle open, resets it)");
    else if (unusable)
        problem(rp, "writer lock: unusable "
                    "(a handle that may write the file, opened with no other handle open, resets it)");
    if (*(volatile uint64_t *)&hd->hd_repair)
        problem(rp, "header: a repair is owed (a writer died or a repair failed); "
                    "a handle that may write the file repairs it when it takes the lock");
}

/* check_locked without the lock: run again while a writer commits under
 * it, so a live writer's half-done change is not reported as damage. */
static int64_t check_unlocked(dshm_env *env, report *rp) {
    dshm_header *hd = DSHM_HDR(env);
    for (int tries = 0;; tries++) {
        dshm_frame f;
        (void)dshm_frame_begin(hd, false, &f);   /* reads on through a change: reported if it stays */
        rp->len = 0;
        rp->problems = 0;
        if (rp->buf && rp->cap)
            rp->buf[0] = 0;
        int64_t r = check_locked(env, rp);
        if (r < 0 || tries == 7 || dshm_frame_valid(hd, false, &f))
            return r;
        dshm_backoff(16);
    }
}

static int64_t check_unguarded(dshm_db *db, char *buf, size_t cap) {
    dshm_env *env;
    int rc = dshm_enter(db, &env);
    if (rc)
        return rc;
    report rp = { .buf = buf, .cap = cap };
    if (buf && cap)
        buf[0] = 0;
    int64_t r;
    if (!(db->db_flags & DSHM_RDONLY)) {
        /* A writable handle: its lock first runs a repair that is owed. */
        if ((rc = dshm_wlock(db, &env, 0, true))) {
            dshm_leave(db);
            return rc;
        }
        rp.locked = true;
        r = check_locked(env, &rp);
        dshm_unlock_rw(env);
    } else {
        /* Opened 'r': nothing is repaired; what is owed is reported. The
         * lock, if it can be taken without writing, gives a stable view. */
        bool owed = false;
        int lrc = env->ev_writable ? dshm_rlock(db, &env, &owed) : DSHM_READONLY;
        if (lrc == 0) {
            rp.locked = true;
            r = check_locked(env, &rp);
            if (r >= 0)
                owed_problems(env, &rp, false);
            dshm_unlock_ro(env);
        } else if (lrc == DSHM_NEED_RECOVERY || lrc == DSHM_READONLY) {
            r = check_unlocked(env, &rp);   /* no lock to take: a racy view */
            if (r >= 0)
                owed_problems(env, &rp, lrc == DSHM_NEED_RECOVERY);
        } else {
            dshm_leave(db);
            return lrc;
        }
        if (r >= 0)
            r = rp.problems;
    }
    dshm_leave(db);
    return r;
}

/* ---------------------------------------------------------------------- */
/* Public entry points                                                     */

int dshm_stat(dshm_db *db, dshm_stat_t *st) { GUARDED(int, stat_unguarded(db, st)); }

int64_t dshm_check(dshm_db *db, char *buf, size_t cap) { GUARDED(int64_t, check_unguarded(db, buf, cap)); }
