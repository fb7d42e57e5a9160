/**
 * @file dshm_space.c
 * @brief Space management: growth of the file, size-class free lists,
 *        the bucket-page pool, and the rebuild of all of it by scanning.
 *
 * Everything here runs under the writer lock: only the lock holder reads
 * or writes the allocator fields of the header and the free blocks.
 * Layer 1: calls only the directory walker.
 *
 * - Records and the directory come from the general space: 128 exact
 *   small classes (16..2048 bytes, a bitmap of the non-empty ones) and 52
 *   power-of-two bins above that. A request takes the smallest block that
 *   fits and gives the remainder back; failing that it is cut from the
 *   top, growing the file when needed. A block freed at the top lowers it.
 * - Bucket pages have a pool of their own, so a page that was a bucket is
 *   only ever reused as a bucket and its seqlock counter only grows: a
 *   reader holding a stale page pointer always sees the counter move.
 *   (Pages leave the pool only in clear and recovery, which bump
 *   hd_struct_seq, failing every read in flight.)
 * - A writer that dies may leave the lists half-updated; the next holder
 *   calls dshm_space_rebuild(), which recomputes them from the live
 *   structures (every gap between live extents is free).
 * - That rebuild sees only what is published (and a batch's journal). So
 *   it runs only at the first allocation of a write (dshm_alloc_record),
 *   never at a later one: there the put's record, a split's new pages or
 *   a batch's split page are allocated but not yet reachable, and would
 *   count as free. A later allocation that meets a damaged list abandons
 *   the lists instead (abandon_lists: their blocks leak, nothing live is
 *   handed out) and leaves the space to the next compaction or repair.
 * - Blocks are not merged when freed. Instead, when a request finds no
 *   block that fits and a quarter of the allocated space was freed since
 *   the last time, the lists are rebuilt the same way (compaction), which
 *   merges every run of neighbouring free blocks, before the top grows.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dshm_base.h"
#include "dshm_guard.h"
#include "dshm_walk.h"
#include "dshm_meta.h"
#include "dshm_space.h"

/* Growth runs in bounded steps: fallocate costs about 0.24 ms per MiB on
 * tmpfs (it clears the pages), so growing by a fraction of the file made
 * single inserts wait for 100 ms and more in large stores, and left up to
 * half the file unused. The file grows ahead of need by half its size,
 * but by at least half GROW_STEP_MIN and at most half GROW_STEP_MAX
 * (4 MiB, about 1 ms), rounded up to whole MiB:
 * amortized over the inserts the cost is the same, and no single insert
 * pays for more than one step beyond what it needs itself. The mapping
 * reserves far more address space than the file (dshm_env_map), so a step
 * is only fallocate, never a remap. */
#define GROW_STEP_MIN  ((uint64_t)1 << 20)   /* steps are whole MiB */
#define GROW_STEP_MAX  ((uint64_t)8 << 20)   /* at most 4 MiB (half of it) beyond need */
#define LARGE_SCAN     32                    /* entries scanned per bin, best fit */
#define COMPACT_MIN    ((uint64_t)1 << 20)   /* freed bytes before a compaction */

static unsigned small_class(uint64_t size) { return (unsigned)(size / DSHM_ALIGN) - 1u; }

static unsigned large_bin(uint64_t size) {
    unsigned b = 63u - (unsigned)__builtin_clzll(size) - 11u;
    return b < DSHM_NLARGE ? b : DSHM_NLARGE - 1;
}

static dshm_freeblk *blk(dshm_env *env, uint64_t off) { return (dshm_freeblk *)DSHM_AT(env, off); }

/** A free-list entry is trusted only if it lies inside allocated space and
 *  is well formed; otherwise the lists are rebuilt from the structures. */
static bool free_ok(dshm_env *env, uint64_t off) {
    dshm_header *hd = DSHM_HDR(env);
    if (off % DSHM_ALIGN || !dshm_in(off, sizeof(dshm_freeblk), hd->hd_top))
        return false;
    uint64_t sz = blk(env, off)->fr_size;
    return sz >= DSHM_ALIGN && sz % DSHM_ALIGN == 0 && dshm_in(off, sz, hd->hd_top);
}

static void push_free(dshm_env *env, uint64_t off, uint64_t size) {
    dshm_header *hd = DSHM_HDR(env);
    if (size < DSHM_ALIGN || size % DSHM_ALIGN || off % DSHM_ALIGN)
        return;   /* only from damaged allocator state: leave it, never index past the lists */
    dshm_freeblk *f = blk(env, off);
    f->fr_size = size;
    if (size <= DSHM_SMALL_MAX) {
        unsigned c = small_class(size);
        f->fr_next = hd->hd_small[c];
        hd->hd_small[c] = off;
        hd->hd_small_map[c / 64] |= (uint64_t)1 << (c % 64);
    } else {
        unsigned b = large_bin(size);
        f->fr_next = hd->hd_large[b];
        hd->hd_large[b] = off;
    }
    hd->hd_free_bytes += size;
}

void dshm_free_block(dshm_env *env, uint64_t off, uint64_t size) {
    dshm_header *hd = DSHM_HDR(env);
    if (size == 0)
        return;
    if (off + size == hd->hd_top) {
        hd->hd_top = off;           /* give the tail back to the top */
        return;
    }
    push_free(env, off, size);
    hd->hd_freed += size;
}

/* Give back the unused tail of a block taken from a list. */
static void take_remainder(dshm_env *env, uint64_t off, uint64_t have, uint64_t want) {
    if (have > want)
        push_free(env, off + want, have - want);
}

/* Pop the first block of small class c. 0 if empty, 1 if corrupt. */
static uint64_t pop_small(dshm_env *env, unsigned c, bool *bad) {
    dshm_header *hd = DSHM_HDR(env);
    uint64_t off = hd->hd_small[c];
    if (!free_ok(env, off) || blk(env, off)->fr_size != (uint64_t)(c + 1) * DSHM_ALIGN) {
        *bad = true;
        return 0;
    }
    hd->hd_small[c] = blk(env, off)->fr_next;
    if (!hd->hd_small[c])
        hd->hd_small_map[c / 64] &= ~((uint64_t)1 << (c % 64));
    hd->hd_free_bytes -= (uint64_t)(c + 1) * DSHM_ALIGN;
    return off;
}

/* Best fit among the first LARGE_SCAN entries of bin b. */
static uint64_t take_large(dshm_env *env, unsigned b, uint64_t size, uint64_t *have, bool *bad) {
    dshm_header *hd = DSHM_HDR(env);
    uint64_t *link = &hd->hd_large[b], *best_link = NULL;
    uint64_t best = 0, best_size = UINT64_MAX;
    for (int n = 0; *link && n < LARGE_SCAN; n++) {
        uint64_t off = *link;
        if (!free_ok(env, off)) {
            *bad = true;
            return 0;
        }
        uint64_t sz = blk(env, off)->fr_size;
        if (sz >= size && sz < best_size) {
            best = off; best_size = sz; best_link = link;
            if (sz == size)
                break;
        }
        link = &blk(env, off)->fr_next;
    }
    if (!best)
        return 0;
    *best_link = blk(env, best)->fr_next;
    hd->hd_free_bytes -= best_size;
    *have = best_size;
    return best;
}

int dshm_grow(dshm_env *env, uint64_t need) {
    dshm_header *hd = DSHM_HDR(env);
    uint64_t size = atomic_load_explicit(&hd->hd_file_size, memory_order_relaxed);
    if (need <= size)
        return 0;
    need = (need + 4095) & ~(uint64_t)4095;   /* the file stays a whole number of pages */
    if (need > env->ev_resv)
        return DSHM_FULL;
    uint64_t step = size < GROW_STEP_MIN ? GROW_STEP_MIN : size > GROW_STEP_MAX ? GROW_STEP_MAX : size;
    uint64_t target = need + step / 2;
    target = (target + GROW_STEP_MIN - 1) & ~(GROW_STEP_MIN - 1);
    if (target > env->ev_resv)
        target = need;
    /* Reserve the blocks first: a full disk or a size limit is an error
     * here, never a SIGBUS later when a page is first touched. */
    int rc = posix_fallocate(env->ev_fd, (off_t)size, (off_t)(target - size));
    if (rc != 0 && target > need) {
        target = need;
        rc = posix_fallocate(env->ev_fd, (off_t)size, (off_t)(target - size));
    }
    if (rc == EOPNOTSUPP || rc == ENOSYS)
        rc = ftruncate(env->ev_fd, (off_t)target) ? errno : 0;
    if (rc != 0) {
        /* Leave the file as it was: a partial fallocate may have grown it. */
        if (ftruncate(env->ev_fd, (off_t)size) != 0) { /* best effort */ }
        return -rc;
    }
    atomic_store_explicit(&hd->hd_file_size, target, memory_order_release);
    return 0;
}

/* A list found damaged at an allocation that may not rebuild (the writer
 * holds blocks it has not published yet): forget every list, so nothing
 * more is taken from them. Their blocks stay unused (a leak, never a block
 * handed out twice) until the next rebuild: hd_freed is raised so the next
 * put's first allocation that finds no block compacts (dshm_alloc_record),
 * and a repair or a reorganize recomputes everything anyway. The counters
 * stay consistent with the (now empty) lists. */
static void abandon_lists(dshm_env *env) {
    dshm_header *hd = DSHM_HDR(env);
    memset(hd->hd_small, 0, sizeof hd->hd_small);
    memset(hd->hd_large, 0, sizeof hd->hd_large);
    memset(hd->hd_small_map, 0, sizeof hd->hd_small_map);
    if (hd->hd_freed < hd->hd_free_bytes + hd->hd_top / 4)
        hd->hd_freed = hd->hd_free_bytes + hd->hd_top / 4;
    hd->hd_free_bytes = 0;
}

/* first: the first allocation of a write (nothing unpublished is held), the
 * one point where the lists may be rebuilt from the structures, as a repair
 * or as a compaction. */
static int alloc_block(dshm_env *env, uint64_t size, uint64_t *out, bool first) {
    dshm_header *hd = DSHM_HDR(env);
    bool bad = false;
    size = (size + DSHM_ALIGN - 1) & ~(uint64_t)(DSHM_ALIGN - 1);
    if (size < DSHM_ALIGN)
        size = DSHM_ALIGN;
    for (int attempt = 0; attempt < 2; attempt++) {
        uint64_t off = 0, have = 0;
        /* A damaged top (misaligned, or outside the file) would hand out
         * misaligned blocks: rebuild the space from the structures, as for
         * a damaged list. */
        uint64_t t = hd->hd_top;
        if (t % DSHM_ALIGN || t < DSHM_HEADER_SIZE ||
            t > atomic_load_explicit(&hd->hd_file_size, memory_order_relaxed))
            bad = true;
        if (size <= DSHM_SMALL_MAX) {
            unsigned c = small_class(size);
            for (unsigned w = c / 64; w < 2 && !off && !bad; w++) {
                uint64_t bits = hd->hd_small_map[w];
                if (w == c / 64)
                    bits &= ~(uint64_t)0 << (c % 64);
                if (bits) {
                    unsigned cc = w * 64 + (unsigned)__builtin_ctzll(bits);
                    off = pop_small(env, cc, &bad);
                    have = (uint64_t)(cc + 1) * DSHM_ALIGN;
                }
            }
        }
        for (unsigned b = size <= DSHM_SMALL_MAX ? 0 : large_bin(size); b < DSHM_NLARGE && !off && !bad; b++) {
            while (b < DSHM_NLARGE && !hd->hd_large[b])   /* most bins are empty */
                b++;
            if (b < DSHM_NLARGE)
                off = take_large(env, b, size, &have, &bad);
        }
        if (bad) {
            /* A list is damaged (a writer died mid-update, or the file was
             * hurt): recompute every list from the live structures, if
             * this write holds nothing unpublished; otherwise stop using
             * the lists. (A damaged top is repaired when the lock is
             * taken, hd_alloc_sum covering it; met here, it stays bad and
             * the write fails with DSHM_CORRUPT.) */
            if (!first) {
                abandon_lists(env);
                bad = false;
                continue;
            }
            int rc = dshm_space_rebuild(env, false);
            if (rc)
                return rc;
            bad = false;
            continue;
        }
        if (!off && first && attempt == 0 && hd->hd_freed >= COMPACT_MIN && hd->hd_freed >= hd->hd_top / 4) {
            /* Nothing fits, and much was freed: merge neighbouring free
             * blocks before growing the file. */
            int rc = dshm_space_rebuild(env, true);
            if (rc)
                return rc;
            continue;
        }
        if (off) {
            take_remainder(env, off, have, size);
            *out = off;
            return 0;
        }
        uint64_t top = hd->hd_top;
        if (size > UINT64_MAX - top)
            return DSHM_FULL;
        int rc = dshm_grow(env, top + size);
        if (rc)
            return rc;
        hd->hd_top = top + size;
        *out = top;
        return 0;
    }
    return DSHM_CORRUPT;
}

int dshm_alloc(dshm_env *env, uint64_t size, uint64_t *out) {
    return alloc_block(env, size, out, false);
}

/* A rebuild (a repair of a damaged list, or a compaction) treats every
 * block it cannot see from the directory as free, so it may only run when
 * the writer holds no unpublished block: at the first allocation of a put.
 * Every other allocation (dshm_alloc, _aligned, dshm_page_alloc) abandons
 * a damaged list instead. */
int dshm_alloc_record(dshm_env *env, uint64_t size, uint64_t *out) {
    return alloc_block(env, size, out, true);
}

int dshm_alloc_aligned(dshm_env *env, uint64_t size, uint64_t align, uint64_t *out) {
    uint64_t off, total = size + align - DSHM_ALIGN;
    int rc = dshm_alloc(env, total, &off);
    if (rc)
        return rc;
    uint64_t start = (off + align - 1) & ~(align - 1);
    if (start > off)
        push_free(env, off, start - off);
    if (off + total > start + size)
        dshm_free_block(env, start + size, off + total - start - size);
    *out = start;
    return 0;
}

int dshm_page_alloc(dshm_env *env, uint32_t kind, uint64_t *out) {
    dshm_header *hd = DSHM_HDR(env);
    uint64_t off = hd->hd_bucket_free;
    dshm_bucket *bk;
    uint64_t seq;
    if (off && off % 64 == 0 && dshm_in(off, DSHM_BUCKET_SIZE, hd->hd_top) &&
        atomic_load_explicit(&((dshm_bucket *)DSHM_AT(env, off))->bk_kind, memory_order_relaxed) == DSHM_BK_FREE) {
        bk = DSHM_AT(env, off);
        hd->hd_bucket_free = atomic_load_explicit(&bk->bk_next, memory_order_relaxed);
        seq = atomic_load_explicit(&bk->bk_seq, memory_order_relaxed) | 1u;   /* stays odd */
    } else {
        hd->hd_bucket_free = 0;   /* empty, or damaged: drop the pool */
        /* A new page is aligned to a page of its own (one TLB entry, no
         * straddle): the padding before it goes to the free lists, where
         * records reuse it. Pages of older files, only 64-byte aligned,
         * stay valid (dshm_page_ok) and are reused from the pool as they are. */
        int rc = dshm_alloc_aligned(env, DSHM_BUCKET_SIZE, DSHM_BUCKET_SIZE, &off);
        if (rc)
            return rc;
        bk = DSHM_AT(env, off);
        seq = 1;
    }
    /* The page is unreachable until published; it keeps an odd counter
     * while it is filled, and the caller makes it even when done. */
    atomic_store_explicit(&bk->bk_seq, seq, memory_order_relaxed);
    atomic_store_explicit(&bk->bk_next, 0, memory_order_relaxed);
    atomic_store_explicit(&bk->bk_prefix, 0, memory_order_relaxed);
    atomic_store_explicit(&bk->bk_depth, 0, memory_order_relaxed);
    atomic_store_explicit(&bk->bk_count, 0, memory_order_relaxed);
    atomic_store_explicit(&bk->bk_kind, kind, memory_order_relaxed);
    memset((char *)bk + 40, 0, DSHM_BUCKET_SIZE - 40);
    bk->bk_gen = hd->hd_gen;
    if (kind == DSHM_BK_PRIMARY)
        hd->hd_buckets++;
    else
        hd->hd_overflow++;
    *out = off;
    return 0;
}

/** Put a page on the bucket pool. Its counter is left odd (so a reader
 *  that still holds it retries) and grows again when it is reused. */
static void page_uncount(dshm_header *hd, dshm_bucket *bk) {
    if (atomic_load_explicit(&bk->bk_kind, memory_order_relaxed) == DSHM_BK_PRIMARY)
        hd->hd_buckets--;
    else
        hd->hd_overflow--;
}

/* Make a page's counter odd for good: a reader that still holds it retries. */
static void page_close(dshm_bucket *bk) {
    uint64_t seq = atomic_load_explicit(&bk->bk_seq, memory_order_relaxed);
    if (!(seq & 1))
        atomic_store_explicit(&bk->bk_seq, seq + 1, memory_order_release);
}

/* A page no structure reaches any more onto the pool. */
static void page_pool(dshm_env *env, uint64_t off) {
    dshm_header *hd = DSHM_HDR(env);
    dshm_bucket *bk = DSHM_AT(env, off);
    page_close(bk);
    atomic_store_explicit(&bk->bk_kind, DSHM_BK_FREE, memory_order_relaxed);
    atomic_store_explicit(&bk->bk_next, hd->hd_bucket_free, memory_order_relaxed);
    hd->hd_bucket_free = off;
}

void dshm_page_free(dshm_env *env, uint64_t off) {
    page_uncount(DSHM_HDR(env), DSHM_AT(env, off));
    page_pool(env, off);
}

/* ---------------------------------------------------------------------- */
/* Frees that wait for the next commit                                     */

/* Note (off, size) on the pending list, adding a chunk when the first one
 * is full. false: no room for a chunk (the block then stays unused until
 * a rebuild finds it unreferenced: leaked for a while, never reused early). */
static bool pending_add(dshm_env *env, uint64_t off, uint64_t size) {
    dshm_header *hd = DSHM_HDR(env);
    uint64_t c = hd->hd_pending;
    dshm_pending *pd = c && c % DSHM_ALIGN == 0 && dshm_in(c, DSHM_PD_SIZE, hd->hd_top) ? DSHM_AT(env, c) : NULL;
    if (!pd || pd->pd_n >= DSHM_PD_CAP) {
        uint64_t nc;
        if (alloc_block(env, DSHM_PD_SIZE, &nc, false))
            return false;
        dshm_pending *npd = DSHM_AT(env, nc);
        npd->pd_next = pd ? c : 0;
        npd->pd_n = 0;
        hd->hd_pending = nc;
        pd = npd;
    }
    pd->pd_ent[2 * pd->pd_n] = off;
    pd->pd_ent[2 * pd->pd_n + 1] = size;
    pd->pd_n++;
    return true;
}

void dshm_retire_block(dshm_env *env, uint64_t off, uint64_t size, uint64_t gen) {
    dshm_header *hd = DSHM_HDR(env);
    if (dshm_gen_current(hd, gen))
        dshm_free_block(env, off, size);
    else if (size)
        pending_add(env, off, size);
}

void dshm_retire_record(dshm_env *env, uint64_t off, uint64_t size) {
    dshm_retire_block(env, off, size, ((const dshm_rec *)DSHM_AT(env, off))->rc_gen);
}

void dshm_retire_page(dshm_env *env, uint64_t off) {
    dshm_header *hd = DSHM_HDR(env);
    dshm_bucket *bk = DSHM_AT(env, off);
    if (dshm_gen_current(hd, bk->bk_gen)) {
        dshm_page_free(env, off);
        return;
    }
    /* Part of the committed image: only its counter changes (odd for
     * good, so readers on it retry; a power-cut restore makes it even). */
    page_uncount(hd, bk);
    page_close(bk);
    pending_add(env, off, 0);
}

void dshm_pending_release(dshm_env *env) {
    dshm_header *hd = DSHM_HDR(env);
    uint64_t c = hd->hd_pending;
    hd->hd_pending = 0;
    while (c && c % DSHM_ALIGN == 0 && dshm_in(c, DSHM_PD_SIZE, hd->hd_top)) {
        dshm_pending *pd = DSHM_AT(env, c);
        uint64_t next = pd->pd_next, n = pd->pd_n < DSHM_PD_CAP ? pd->pd_n : DSHM_PD_CAP;
        for (uint64_t i = 0; i < n; i++) {
            uint64_t off = pd->pd_ent[2 * i], size = pd->pd_ent[2 * i + 1];
            if (size == 0 && dshm_page_ok(off, hd->hd_top))
                page_pool(env, off);
            else if (size && off % DSHM_ALIGN == 0 && dshm_in(off, size, hd->hd_top))
                dshm_free_block(env, off, size);
        }
        dshm_free_block(env, c, DSHM_PD_SIZE);
        c = next;
    }
}

void dshm_space_reset(dshm_env *env, uint64_t top) {
    dshm_header *hd = DSHM_HDR(env);
    memset(hd->hd_small, 0, sizeof hd->hd_small);
    memset(hd->hd_large, 0, sizeof hd->hd_large);
    memset(hd->hd_small_map, 0, sizeof hd->hd_small_map);
    hd->hd_free_bytes = 0;
    hd->hd_bucket_free = 0;
    hd->hd_top = top;
}

typedef struct extent { uint64_t off, size; bool prot; } extent;

static int cmp_extent(const void *a, const void *b) {
    const extent *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

typedef struct extents { extent *v; size_t n, cap; } extents;

static int ext_add(extents *e, uint64_t off, uint64_t size) {
    if (e->n == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 4096;
        extent *v = realloc(e->v, cap * sizeof *v);
        if (!v)
            return -ENOMEM;
        e->v = v;
        e->cap = cap;
    }
    e->v[e->n].off = off;
    e->v[e->n].size = size;
    e->v[e->n].prot = false;
    e->n++;
    return 0;
}

/* The structures a commit's meta references (its directory, bucket pages
 * and records) are kept by a rebuild whether or not the live structures
 * still reach them: until the next commit is on disk they are what a power
 * loss goes back to. Walked best effort, read-only: a damaged image keeps
 * what could be read of it. Returns 0 or -ENOMEM. */
static int meta_extents(dshm_env *env, const dshm_meta *m, extents *e) {
    uint64_t limit = atomic_load_explicit(&DSHM_HDR(env)->hd_file_size, memory_order_relaxed), page;
    if (m->mt_top < limit)
        limit = m->mt_top;
    dshm_dirwalk w;
    dshm_chain ch;
    if (dshm_dir_start(&w, env, m->mt_dir, limit))
        return 0;
    size_t from = e->n;
    int rc = ext_add(e, DSHM_DIR_OFF(m->mt_dir), dshm_dir_bytes(w.dw_gd)), more;
    while (!rc && (more = dshm_dir_next_bucket(&w)) >= 0) {
        if (more == 0)
            break;
        dshm_chain_start(&ch, env, w.dw_bucket, limit);
        while (!rc && dshm_chain_next(&ch, &page) == 1) {
            dshm_bucket *pg = DSHM_AT(env, page);
            rc = ext_add(e, page, DSHM_BUCKET_SIZE);
            for (unsigned s = 0; s < DSHM_SLOTS && !rc; s++) {
                uint64_t r = atomic_load_explicit(&pg->bk_slots[s].sl_rec, memory_order_relaxed);
                const dshm_rec *rec = r ? dshm_rec_sane(env, r, limit) : NULL;
                if (rec)
                    rc = ext_add(e, r, dshm_rec_size(rec->rc_klen, rec->rc_vlen));
            }
        }
    }
    for (size_t i = from; i < e->n; i++)
        e->v[i].prot = true;
    return rc;
}

uint64_t dshm_alloc_checksum(const dshm_header *hd) {
    /* The eight scalar fields from hd_top to hd_freed, folded with a
     * multiply-xorshift mix: against damage, not against an adversary
     * (who could write the sum as well). */
    const uint64_t *w = &hd->hd_top;
    uint64_t h = UINT64_C(0x9e3779b97f4a7c15);
    for (int i = 0; i < 8; i++) {
        h = (h ^ w[i]) * UINT64_C(0xff51afd7ed558ccd);
        h ^= h >> 32;
    }
    return h ? h : 1;
}
_Static_assert(offsetof(dshm_header, hd_freed) - offsetof(dshm_header, hd_top) == 7 * 8,
               "hd_alloc_sum covers hd_top .. hd_freed");

/* The batch being written (or finished by a recovery): its journal and
 * the records it lists are live though no slot may point to them yet.
 * Returns 0, -ENOMEM, or DSHM_CORRUPT for a damaged journal. */
static int journal_extents(dshm_env *env, extents *e) {
    dshm_header *hd = DSHM_HDR(env);
    uint64_t limit = atomic_load_explicit(&hd->hd_file_size, memory_order_relaxed);
    dshm_journal *jr = dshm_journal_at(env, limit);
    if (!jr)
        return DSHM_CORRUPT;
    int rc = ext_add(e, hd->hd_batch, dshm_journal_size(jr->jr_cap));
    for (uint64_t i = 0; i < jr->jr_n && !rc; i++) {
        uint64_t size, r = dshm_journal_rec(env, jr->jr_ent[i], limit, &size);
        rc = r ? ext_add(e, r, size) : DSHM_CORRUPT;
    }
    return rc;
}

/** Recompute the free lists, the counters and the top from the live
 *  structures: the directory, every bucket page and every record they
 *  reference. As a repair (!compact): slots whose records are out of
 *  bounds are dropped (they can only come from damage), pooled bucket pages
 *  become free space and hd_struct_seq fails the reads in flight. As a
 *  compaction: the pool is kept and nothing a reader looks at changes. */
int dshm_space_rebuild(dshm_env *env, bool compact) {
    dshm_header *hd = DSHM_HDR(env);
    uint64_t limit = atomic_load_explicit(&hd->hd_file_size, memory_order_relaxed);
    uint64_t dir = atomic_load_explicit(&hd->hd_dir, memory_order_relaxed);
    uint64_t count = 0, live = 0, buckets = 0, overflow = 0, pool = 0, page;
    extents e = {0};
    dshm_dirwalk w;
    dshm_chain ch;
    int rc = dshm_dir_start(&w, env, dir, limit), more;

    if (rc)
        return rc;
    /* Pages leave the bucket pool in a repair: fail every read in flight. */
    bool own_seq = !compact && dshm_struct_begin(hd);
    if (compact) {
        pool = hd->hd_bucket_free;
        dshm_chain_start(&ch, env, pool, limit);   /* the pool is linked by bk_next too */
        while ((more = dshm_chain_next(&ch, &page)) == 1)
            if ((rc = ext_add(&e, page, DSHM_BUCKET_SIZE)))
                goto out;
        if ((rc = more))
            goto out;
    }
    if ((rc = ext_add(&e, DSHM_DIR_OFF(dir), dshm_dir_bytes(w.dw_gd))))
        goto out;
    while ((more = dshm_dir_next_bucket(&w)) == 1) {
        uint64_t b = w.dw_bucket;
        buckets++;
        dshm_chain_start(&ch, env, b, limit);
        while ((more = dshm_chain_next(&ch, &page)) == 1) {
            dshm_bucket *pg = DSHM_AT(env, page);
            if (page != b)
                overflow++;
            /* A repair drops damaged slots with the probe chains kept whole
             * (entries behind a dropped slot move up) and recounts. */
            if (!compact)
                dshm_page_mend(env, pg, limit);
            if ((rc = ext_add(&e, page, DSHM_BUCKET_SIZE)))
                goto out;
            uint32_t used = 0;
            for (unsigned s = 0; s < DSHM_SLOTS; s++) {
                uint64_t r = atomic_load_explicit(&pg->bk_slots[s].sl_rec, memory_order_relaxed);
                if (!r)
                    continue;
                /* The pointer is formed only once r is known to be inside
                 * the file (a wild offset would overflow it: UB). */
                const dshm_rec *rec = dshm_rec_sane(env, r, limit);
                if (!rec) {
                    if (compact) {
                        rc = DSHM_CORRUPT;
                        goto out;
                    }
                    atomic_store_explicit(&pg->bk_slots[s].sl_rec, 0, memory_order_relaxed);
                    continue;
                }
                uint64_t rs = dshm_rec_size(rec->rc_klen, rec->rc_vlen);
                if ((rc = ext_add(&e, r, rs)))
                    goto out;
                used++;
                live += rs;
                if (rec->rc_stamp > hd->hd_stamp)   /* a header restored from an older image */
                    hd->hd_stamp = rec->rc_stamp;
            }
            if (!compact)
                atomic_store_explicit(&pg->bk_count, used, memory_order_relaxed);
            count += used;
        }
        if ((rc = more))
            goto out;
    }
    if ((rc = more))
        goto out;
    /* What the newest commit references (and, while a commit is on its
     * way to the disk, the one before) is kept: see meta_extents. */
    dshm_meta metas[2];
    unsigned nm = hd->hd_volatile ? 0 : dshm_meta_valid(hd, metas);   /* stale on a volatile store */
    for (unsigned i = 0; i < nm && (i == 0 || hd->hd_committing); i++)
        if ((rc = meta_extents(env, &metas[i], &e)))
            goto out;
    /* The batch's journal and records are live (journal_extents); a
     * damaged journal is dropped (the batch is lost with the damage). */
    if (hd->hd_batch) {
        int jrc = journal_extents(env, &e);
        if (jrc == DSHM_CORRUPT)
            hd->hd_batch = 0;
        else if ((rc = jrc))
            goto out;
    }
    qsort(e.v, e.n, sizeof *e.v, cmp_extent);
    /* A record both in a slot and in the journal is listed twice, and
     * most of what a commit references is live too. Live extents must not
     * overlap; one kept for a commit merges with whatever it meets. */
    size_t m = 0;
    for (size_t i = 0; i < e.n; i++) {
        if (m && e.v[m - 1].off == e.v[i].off && e.v[m - 1].size == e.v[i].size) {
            e.v[m - 1].prot = e.v[m - 1].prot && e.v[i].prot;
            continue;
        }
        if (m && e.v[m - 1].off + e.v[m - 1].size > e.v[i].off) {
            if (!e.v[m - 1].prot && !e.v[i].prot) { rc = DSHM_CORRUPT; goto out; }
            uint64_t end = e.v[i].off + e.v[i].size;
            if (end > e.v[m - 1].off + e.v[m - 1].size)
                e.v[m - 1].size = end - e.v[m - 1].off;
            e.v[m - 1].prot = e.v[m - 1].prot && e.v[i].prot;
            continue;
        }
        e.v[m++] = e.v[i];
    }
    e.n = m;
    uint64_t top = e.n ? e.v[e.n - 1].off + e.v[e.n - 1].size : DSHM_HEADER_SIZE;
    dshm_space_reset(env, top);
    if (!compact)
        DSHM_CRASH_POINT("repair-space-reset");
    hd->hd_bucket_free = pool;
    hd->hd_freed = 0;
    /* The pending blocks are kept above (the commit references them) and
     * the list's chunks become free: the blocks come back at a rebuild
     * after the next commit. */
    hd->hd_pending = 0;
    uint64_t prev = DSHM_HEADER_SIZE;
    for (size_t i = 0; i < e.n; i++) {
        if (e.v[i].off > prev)
            push_free(env, prev, e.v[i].off - prev);
        prev = e.v[i].off + e.v[i].size;
    }
    hd->hd_live_bytes = live;
    hd->hd_buckets = buckets;
    hd->hd_overflow = overflow;
    atomic_store_explicit(&hd->hd_count, count, memory_order_relaxed);
out:
    free(e.v);
    dshm_struct_end(hd, own_seq);
    return rc;
}
