/**
 * @file dshm_salvage.c
 * @brief Salvage: every record that can still be read from a damaged file,
 *        handed out in batches, with counts of what could not be read.
 *
 * Layer 7: a leaf. It reads the file through a private read-only mapping
 * of its own (never through a handle: dshm_open refuses, or repairs, the
 * files salvage is for), and calls only the directory walker (layer 0),
 * the key hash (layer 2) and, through GUARDED, the SIGBUS undo of
 * dshm_handle.c (layer 6), which has nothing to undo here.
 *
 * What it trusts: the header's magic, format and page sizes (a file
 * without them is not one salvage can read: DSHM_BAD_MAGIC,
 * DSHM_VERSION_MISMATCH, DSHM_CORRUPT), hd_dir (a directory that is not
 * inside the file ends the salvage with DSHM_CORRUPT) and the seed. It
 * does not look at the writer lock, hd_repair, the seqlock counters, the
 * allocator or its checksum, nor at the header checksum: each record
 * proves itself, its rc_check must be the low half of its key's hash
 * under the file's seed (so a damaged seed shows as every record bad).
 *
 * The walk: the directory's entries in order (dshm_dir_start and
 * dshm_dir_next: each entry's offset checked); a run of neighbouring
 * entries naming the same page is one bucket, visited once at its first
 * entry. (Not dshm_dir_next_bucket: its "first entry" is computed from
 * the page's bk_depth, which salvage cannot trust; a page whose depth is
 * damaged would be visited many times, or never.) Each bucket's chain is
 * walked with dshm_chain_next (each link bounds-checked), after counting
 * its distinct pages with Brent's cycle finder, so a chain that loops is
 * cut where it first comes back (counted in sv_cycles) and no page is
 * read twice. A page must have the kind its place asks (primary at the
 * directory, overflow along a chain); one that does not, or a link or
 * an entry outside the file, is a bad page (sv_bad_pages): the rest of
 * that bucket is skipped. A slot's record must be aligned and inside the
 * file, with klen <= DSHM_MAX_KEY, vlen <= DSHM_MAX_VALUE and its hash
 * tag right; one that is not is a bad record (sv_bad_records).
 *
 * Two passes. Pass 0 hands over the records that get() would find: the
 * directory entry for the key's hash names the bucket holding the slot,
 * and the slot's hash is the key's. Pass 1 hands over the others (a stray
 * left where a damaged directory or an interrupted split put it). The
 * caller keeps the first copy of a key it is given, so a reachable copy
 * wins over a stray, and among copies of one kind the first in the walk.
 * The counts are taken in pass 0 only.
 *
 * One call per batch, stateless between calls: the cursor in the
 * dshm_salvage_t says where to go on (pass, directory entry, page along
 * the chain, slot), and each call maps the file again (cheap: mmap is
 * lazy). Nothing is written to the file, no lock is taken: a writer
 * changing the file meanwhile makes the result a fuzzy copy (each record
 * copied whole or rejected, as its key is hashed from the copy).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dshm_base.h"
#include "dshm_guard.h"
#include "dshm_walk.h"
#include "dshm_hash.h"
#include "dshm_handle.h"

typedef struct salv {
    dshm_env env;          /**< the private mapping (ev_base, ev_resv only) */
    uint64_t limit;        /**< file size: every offset is checked below it */
    dshm_salvage_t *sv;
    char *buf;
    size_t cap, used;
    uint64_t *need;
} salv;

/* The page at p if it is a bucket page of this kind inside the file. */
static dshm_bucket *page_at(salv *s, uint64_t p, uint32_t kind) {
    if (!dshm_page_ok(p, s->limit))
        return NULL;
    dshm_bucket *bk = DSHM_AT(&s->env, p);
    return atomic_load_explicit(&bk->bk_kind, memory_order_relaxed) == kind ? bk : NULL;
}

/* The link after page p (0 for an end, or a link that leads nowhere:
 * the chain walk itself reports it). */
static uint64_t link_after(salv *s, uint64_t p) {
    if (!dshm_page_ok(p, s->limit))
        return 0;
    return atomic_load_explicit(&((dshm_bucket *)DSHM_AT(&s->env, p))->bk_next, memory_order_relaxed);
}

/* Pages of the chain from first before it ends or comes back to a page it
 * visited (Brent: the tail length plus the loop length), bounded by the
 * pages the file holds. *loops says whether it came back. */
static uint64_t chain_pages(salv *s, uint64_t first, bool *loops) {
    uint64_t bound = s->limit / DSHM_BUCKET_SIZE + 1;
    uint64_t power = 1, lam = 1, tort = first, hare = link_after(s, first), steps = 0;
    *loops = false;
    if (!first)
        return 0;
    while (hare && hare != tort) {
        if (power == lam) {
            tort = hare;
            power *= 2;
            lam = 0;
        }
        hare = link_after(s, hare);
        lam++;
        if (++steps > bound)
            break;     /* cannot happen in a file this size; belt and braces */
    }
    if (!hare || hare != tort) {
        /* No loop: the chain's length, links counted up to the end. */
        uint64_t n = 0;
        for (uint64_t p = first; p && n <= bound; p = link_after(s, p))
            n++;
        return n;
    }
    *loops = true;
    uint64_t mu = 0;
    tort = hare = first;
    for (uint64_t i = 0; i < lam; i++)
        hare = link_after(s, hare);
    while (tort != hare && mu <= bound) {
        tort = link_after(s, tort);
        hare = link_after(s, hare);
        mu++;
    }
    return mu + lam;
}

/* Is the slot's record one get() would find from this bucket? */
static bool reachable(salv *s, const _Atomic uint64_t *dir, unsigned gd, uint64_t bucket,
                      uint64_t slot_hash, uint64_t h) {
    uint64_t i = gd ? h >> (64 - gd) : 0;
    return slot_hash == h && atomic_load_explicit(&dir[i], memory_order_relaxed) == bucket;
}

/* One slot: 1 handed over (or passed by in this pass), 0 a bad record
 * (counted), -ERANGE the buffer is full (nothing counted). */
static int take_slot(salv *s, const dshm_slot *sl, const _Atomic uint64_t *dir, unsigned gd,
                     uint64_t bucket) {
    dshm_salvage_t *sv = s->sv;
    uint64_t r = atomic_load_explicit(&sl->sl_rec, memory_order_relaxed);
    uint64_t sh = atomic_load_explicit(&sl->sl_hash, memory_order_relaxed);
    if (!r)
        return 1;
    if (r % DSHM_ALIGN || !dshm_in(r, DSHM_REC_HDR, s->limit))
        goto bad;
    const volatile dshm_rec *rec = DSHM_AT(&s->env, r);
    uint64_t kl = rec->rc_klen, vl = rec->rc_vlen;
    uint32_t tag = rec->rc_check;
    if (kl > DSHM_MAX_KEY || vl > DSHM_MAX_VALUE || !dshm_in(r, dshm_rec_size(kl, vl), s->limit))
        goto bad;
    uint64_t now = 0;
    if (dshm_rec_expired(rec, &now))
        return 1;   /* absent already: not brought back (the copy has no deadlines) */
    size_t sz = 4 + 8 + 8 + kl + vl;
    if (sz > s->cap - s->used) {
        if (s->used == 0 && s->need)
            *s->need = sz;
        return -ERANGE;
    }
    char *p = s->buf + s->used;
    const char *key = p + 20;
    memcpy(p + 20, DSHM_AT(&s->env, r + DSHM_REC_HDR), kl + vl);
    uint64_t h = dshm_key_hash(DSHM_HDR(&s->env), key, kl);
    if ((uint32_t)h != tag)
        goto bad;
    if (reachable(s, dir, gd, bucket, sh, h) != (sv->sv_pass == 0))
        return 1;    /* the other pass's */
    uint32_t kl32 = (uint32_t)kl;
    memcpy(p, &kl32, 4);
    memcpy(p + 4, &vl, 8);
    memcpy(p + 12, &h, 8);
    s->used += sz;
    sv->sv_records++;
    return 1;
bad:
    if (sv->sv_pass == 0)
        sv->sv_bad_records++;
    return 0;
}

/* The bucket at directory entry sv_entry (its first entry), from page
 * sv_page, slot sv_slot: 0 done with it, -ERANGE the buffer is full (the
 * cursor names the slot that did not fit). */
static int take_bucket(salv *s, const _Atomic uint64_t *dir, unsigned gd, uint64_t bucket) {
    dshm_salvage_t *sv = s->sv;
    bool count = sv->sv_pass == 0;
    bool loops;
    uint64_t npages = chain_pages(s, bucket, &loops);
    dshm_chain ch;
    uint64_t page;
    int more;
    dshm_chain_start(&ch, &s->env, bucket, s->limit);
    for (uint64_t i = 0; i < npages && (more = dshm_chain_next(&ch, &page)) != 0; i++) {
        if (i < sv->sv_page)
            continue;          /* handed over by an earlier call */
        dshm_bucket *pg = more == 1 ? page_at(s, page, i ? DSHM_BK_OVERFLOW : DSHM_BK_PRIMARY) : NULL;
        if (!pg) {
            if (count)
                sv->sv_bad_pages++;
            return 0;          /* the rest of the chain cannot be trusted */
        }
        for (; sv->sv_slot < DSHM_SLOTS; sv->sv_slot++) {
            int r = take_slot(s, &pg->bk_slots[sv->sv_slot], dir, gd, bucket);
            if (r == -ERANGE)
                return r;
        }
        sv->sv_slot = 0;
        sv->sv_page = i + 1;
    }
    if (loops && count)
        sv->sv_cycles++;
    return 0;
}

static int64_t salvage_walk(salv *s) {
    dshm_salvage_t *sv = s->sv;
    dshm_header *hd = DSHM_HDR(&s->env);
    /* The magic was read before mapping (dshm_salvage). */
    if (hd->hd_format != DSHM_FORMAT)
        return DSHM_VERSION_MISMATCH;
    if (hd->hd_header_size != DSHM_HEADER_SIZE || hd->hd_bucket_size != DSHM_BUCKET_SIZE)
        return DSHM_CORRUPT;
    uint64_t hdir = atomic_load_explicit(&hd->hd_dir, memory_order_relaxed);
    dshm_dirwalk w;
    if (dshm_dir_start(&w, &s->env, hdir, s->limit))
        return DSHM_CORRUPT;
    sv->sv_entries = w.dw_n;
    sv->sv_expected = atomic_load_explicit(&hd->hd_count, memory_order_relaxed);
    while (sv->sv_pass < 2) {
        bool count = sv->sv_pass == 0;
        w.dw_i = sv->sv_entry - 1;   /* the next dshm_dir_next visits sv_entry (UINT64_MAX + 1 = 0) */
        int r;
        while ((r = dshm_dir_next(&w)) != 0) {
            uint64_t i = w.dw_i;
            /* A run of neighbours naming one page is one bucket. */
            bool first = i == 0 || atomic_load_explicit(&w.dw_dir[i - 1], memory_order_relaxed) != w.dw_bucket;
            if (first) {
                if (r < 0 && w.dw_bad == DSHM_DW_OFFSET) {
                    if (count)
                        sv->sv_bad_pages++;
                } else {
                    /* A depth above the global one is damage in the page's
                     * header; the kind check and each record decide. */
                    int tr = take_bucket(s, w.dw_dir, w.dw_gd, w.dw_bucket);
                    if (tr == -ERANGE) {
                        sv->sv_entry = i;
                        return s->used ? (int64_t)s->used : -ERANGE;
                    }
                }
            }
            sv->sv_entry = i + 1;
            sv->sv_page = 0;
            sv->sv_slot = 0;
        }
        sv->sv_pass++;
        sv->sv_entry = 0;
    }
    sv->sv_done = 1;
    return (int64_t)s->used;
}

static int64_t salvage_guarded(salv *s) { GUARDED(int64_t, salvage_walk(s)); }

int64_t dshm_salvage(const char *path, dshm_salvage_t *sv, char *buf, size_t cap, uint64_t *need) {
    if (!path || !sv || (!buf && cap))
        return DSHM_INVALID;
    if (sv->sv_done)
        return 0;
    if (sv->sv_pass > 1 || sv->sv_slot > DSHM_SLOTS)
        return DSHM_INVALID;
    dshm_hooks_init();
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    int64_t rc;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        goto out;
    }
    char magic[DSHM_MAGIC_LEN];
    ssize_t got = pread(fd, magic, sizeof magic, 0);
    if (got != (ssize_t)sizeof magic || memcmp(magic, DSHM_MAGIC, DSHM_MAGIC_LEN) != 0) {
        rc = got < 0 ? -errno : DSHM_BAD_MAGIC;
        goto out;
    }
    if (st.st_size < (off_t)(DSHM_HEADER_SIZE + DSHM_BUCKET_SIZE)) {
        rc = DSHM_TRUNCATED;
        goto out;
    }
    salv s = {0};
    s.limit = (uint64_t)st.st_size;
    if ((uint64_t)(size_t)s.limit != s.limit) {
        rc = DSHM_FULL;
        goto out;
    }
    void *base = mmap(NULL, (size_t)s.limit, PROT_READ, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        rc = -errno;
        goto out;
    }
    s.env.ev_fd = fd;
    s.env.ev_base = base;
    s.env.ev_resv = s.limit;
    s.sv = sv;
    s.buf = buf;
    s.cap = cap;
    s.need = need;
    rc = salvage_guarded(&s);
    munmap(base, (size_t)s.limit);
out:
    close(fd);
    return rc;
}
