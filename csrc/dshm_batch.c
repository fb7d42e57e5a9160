/**
 * @file dshm_batch.c
 * @brief Atomic batches (dshm_write_batch, and dshm_batch_held for a
 *        transaction's publish under a lock already held) and reads of
 *        many keys as of one instant (dshm_get_many, dshm_snapshot).
 *
 * A batch, under the writer lock:
 *   1. stage: every new record (and a key-only record per delete) is
 *      written into free space and listed in a journal (dshm_layout.h),
 *      which hd_batch points to from the start, so a rebuild of the free
 *      lists keeps them; nothing readers can reach has changed yet;
 *   2. commit point: jr_state = COMMITTED, one release store;
 *   3. apply: inside one odd window of hd_struct_seq every entry is
 *      applied (slot switched, inserted or removed); a reader of any key
 *      that overlaps the window retries, so it sees all of the batch or
 *      none of it; then hd_batch = 0, hd_commit += 1, the window closes;
 *   4. the journal and the delete records are freed.
 * A writer that dies before 2 leaves no trace (recovery drops the journal
 * and the rebuild frees the records); one that dies after 2 leaves the
 * window odd, so readers wait for the next lock holder, whose recovery
 * applies every entry again (idempotent: the keys of a journal are
 * distinct, and an entry already applied is seen as such).
 *
 * Consistent reads: every write bumps hd_commit after it changed what
 * readers see, and a batch does its changes inside an odd hd_struct_seq
 * window. A multi-key read samples both, reads each key under its bucket
 * seqlock, and checks both again: unchanged means no write committed in
 * between, so the values were all current at one instant. Otherwise it
 * retries, and after too many losses reads under the writer lock.
 *
 * Layer 9: calls the journal, recovery (a batch that cannot be applied),
 * writes (finish_write, sync), iteration (bucket snapshots), the read-retry
 * protocol and handles.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "dshm_base.h"
#include "dshm_guard.h"
#include "dshm_hash.h"
#include "dshm_space.h"
#include "dshm_index.h"
#include "dshm_journal.h"
#include "dshm_recover.h"
#include "dshm_handle.h"
#include "dshm_read.h"
#include "dshm_write.h"
#include "dshm_iter.h"
#include "dshm_batch.h"

#define SNAPSHOT_TRIES 4   /* whole-store copies tried lock-free before the lock */
/* get_many's prefetch distances, in keys (measured at 1,000,000 keys:
 * docs/benchmarks.md): the bucket page 8 keys ahead, the record its first
 * probe slot names 4 keys ahead (the slot's line has arrived by then), the
 * directory entry 16 keys ahead where the directory outgrows the L2. */
#define PF_BUCKET      8
#define PF_RECORD      4
#define PF_DIR         16
#define PF_DIR_MIN     ((uint64_t)256 << 10)   /* directory bytes */
/* Batches staging at most this many bytes fault their pages in one by one
 * instead of asking for them all with MADV_POPULATE_WRITE. */
#define POPULATE_MIN   ((uint64_t)16 << 10)

/* get_many prefetches across keys only in files at least this large:
 * below, the store stays in the caches and the hints cost more than they
 * save (docs/benchmarks.md, "get_many"). DSHM_PREFETCH_MIN (bytes) sets
 * it for measurements. */
static _Atomic uint64_t prefetch_min_v;   /* 0: not read yet; else threshold + 1 */

static uint64_t prefetch_min(void) {
    uint64_t v = atomic_load_explicit(&prefetch_min_v, memory_order_relaxed);
    if (!v) {
        const char *t = getenv("DSHM_PREFETCH_MIN");
        v = (t && *t ? strtoull(t, NULL, 0) : (uint64_t)8 << 20) + 1;
        atomic_store_explicit(&prefetch_min_v, v, memory_order_relaxed);
    }
    return v - 1;
}

/* ---------------------------------------------------------------------- */
/* Writing a batch                                                         */

typedef struct bop {
    uint64_t h;
    const char *key, *val;
    uint64_t klen;
    int64_t vlen;        /* < 0: delete */
} bop;

static bool same_key(const bop *a, const bop *b) {
    return a->h == b->h && a->klen == b->klen && (a->klen == 0 || memcmp(a->key, b->key, a->klen) == 0);
}

/* Keep the last operation of each key, in the caller's order (an open-
 * addressing table of indices by hash: one pass, no sort, so staging
 * reads the caller's buffers in order). Returns the number kept. */
static int dedup(bop *ops, size_t n, size_t *kept) {
    size_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    size_t *tab = malloc(cap * sizeof *tab);   /* index + 1; 0 = empty */
    if (!tab)
        return -ENOMEM;
    memset(tab, 0, cap * sizeof *tab);
    bool *dead = calloc(n, sizeof *dead);
    if (!dead) {
        free(tab);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        size_t s = (size_t)(ops[i].h ^ (ops[i].h >> 29)) & (cap - 1);
        while (tab[s] && !same_key(&ops[tab[s] - 1], &ops[i]))
            s = (s + 1) & (cap - 1);
        if (tab[s])
            dead[tab[s] - 1] = true;
        tab[s] = i + 1;
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (!dead[i])
            ops[m++] = ops[i];
    free(dead);
    free(tab);
    *kept = m;
    return 0;
}

/* Write the records of ops[0..m) into free space, listed in a journal
 * that hd_batch points to. The records are carved one after the other
 * out of one block (each remains a block of its own size, freed alone
 * later): one allocation, and the copies stream. On error the caller
 * frees what was staged. */
static int stage(dshm_env *env, const bop *ops, size_t m, uint64_t total) {
    dshm_header *hd = DSHM_HDR(env);
    uint64_t joff, off;
    int rc;
    /* A store with a cap: room for all of the batch's records first (as if
     * every key were new: an overwrite frees its old record only as the
     * batch applies), through the put's eviction. */
    bool evicted = false;
    if (hd->hd_max_bytes && (rc = dshm_make_room(env, total, 0, &evicted)))
        return rc;
    if ((rc = dshm_alloc(env, dshm_journal_size(m), &joff)))
        return rc;
    dshm_journal *jr = DSHM_AT(env, joff);
    jr->jr_magic = DSHM_JR_MAGIC;
    jr->jr_cap = m;
    jr->jr_n = 0;
    atomic_store_explicit(&jr->jr_state, DSHM_JR_STAGING, memory_order_relaxed);
    hd->hd_batch = joff;
    if ((rc = dshm_alloc(env, total, &off)))
        return rc;
    for (size_t i = 0; i < m; i++) {
        const bop *op = &ops[i];
        uint64_t vlen = op->vlen < 0 ? 0 : (uint64_t)op->vlen;
        dshm_rec_fill(hd, DSHM_AT(env, off), op->h, op->key, op->klen, op->val, vlen, 0, 0);
        jr->jr_ent[jr->jr_n++] = off | (op->vlen < 0 ? DSHM_JR_DEL : 0);
        off += dshm_rec_size(op->klen, vlen);
    }
    return 0;
}

/* Check the arguments and list the operations (*opsp, malloc'ed even
 * when the check fails; the caller frees it); *roomp: the bytes the
 * journal and the records need. */
static int batch_args(size_t n, const char *keys, const uint64_t *klens, const char *vals,
                      const int64_t *vlens, bop **opsp, uint64_t *roomp) {
    int rc = 0;
    bop *ops = NULL;
    /* The arguments are checked before the call enters (a closed handle
     * still answers DSHM_CLOSED first: dshm_write_enter reports rc after). */
    uint64_t koff = 0, voff = 0, room = dshm_journal_size(n);
    if (n && (!klens || !vlens))
        rc = DSHM_INVALID;
    else if (n > SIZE_MAX / sizeof *ops || !(ops = malloc((n ? n : 1) * sizeof *ops)))
        rc = -ENOMEM;
    for (size_t i = 0; i < n && !rc; i++) {
        uint64_t kl = klens[i];
        int64_t vl = vlens[i];
        if (kl > DSHM_MAX_KEY || (vl >= 0 && (uint64_t)vl > DSHM_MAX_VALUE))
            rc = DSHM_TOOBIG;
        else if ((kl && !keys) || (vl > 0 && !vals))
            rc = DSHM_INVALID;
        if (rc)
            break;
        ops[i] = (bop){ 0, keys ? keys + koff : NULL, vl >= 0 && vals ? vals + voff : NULL, kl, vl };
        koff += kl;
        voff += vl > 0 ? (uint64_t)vl : 0;
        uint64_t rs = dshm_rec_size(kl, vl > 0 ? (uint64_t)vl : 0);
        if (room > UINT64_MAX / 2 - rs)
            rc = DSHM_FULL;
        room += rs;
    }
    *opsp = ops;
    *roomp = room;
    return rc;
}

static int batch_locked(dshm_db *db, dshm_env *env, bop *ops, size_t n, uint64_t room, uint64_t *commit);

static int write_batch_unguarded(dshm_db *db, size_t n, const char *keys, const uint64_t *klens,
                                 const char *vals, const int64_t *vlens, uint64_t *commit) {
    dshm_env *env;
    bop *ops = NULL;
    uint64_t room = 0;
    int rc = batch_args(n, keys, klens, vals, vlens, &ops, &room);
    if (n == 0 && !rc) {   /* nothing to do: no commit, no lock */
        if ((rc = dshm_enter(db, &env)) == 0) {
            if (db->db_flags & DSHM_RDONLY)
                rc = DSHM_READONLY;
            else if (commit)
                *commit = atomic_load_explicit(&DSHM_HDR(env)->hd_commit, memory_order_acquire);
            dshm_leave(db);
        }
        free(ops);
        return rc;
    }
    if ((rc = dshm_write_enter(db, &env, rc, room, n, true))) {
        free(ops);
        return rc;
    }
    return batch_locked(db, env, ops, n, room, commit);
}

/* Under the lock, entered: publish ops[0..n) (frees ops) and end the
 * write (dshm_finish_write). */
static int batch_locked(dshm_db *db, dshm_env *env, bop *ops, size_t n, uint64_t room, uint64_t *commit) {
    int rc = 0;
    dshm_header *hd = DSHM_HDR(env);
    /* Keep the last operation of each key (a journal's keys are distinct). */
    for (size_t i = 0; i < n; i++)
        ops[i].h = dshm_key_hash(hd, ops[i].key, ops[i].klen);
    size_t m = n;
    if (n > 1 && (rc = dedup(ops, n, &m)) != 0) {
        free(ops);
        return dshm_finish_write(db, env, rc);
    }
    /* Reserve, then stage: an error up to the commit point leaves the
     * store as it was. */
    uint64_t top = hd->hd_top, iroom = dshm_index_room(env, m);
    if (top > UINT64_MAX - room - iroom)
        rc = DSHM_FULL;
    else
        rc = dshm_grow(env, top + room + iroom);
#ifdef MADV_POPULATE_WRITE
    /* Map the pages the batch will fill in one go rather than a fault
     * per page (Linux 5.14+; elsewhere a no-op). Not for a batch of a
     * few pages: the system call costs more than their faults (a 10-key
     * batch took 3.0 us with it, 1.5 us without). */
    if (!rc && room > POPULATE_MIN)
        madvise(env->ev_base + (top & ~(uint64_t)4095), (room + 4095) & ~(uint64_t)4095, MADV_POPULATE_WRITE);
#endif
    uint64_t total = 0;
    for (size_t i = 0; i < m; i++)
        total += dshm_rec_size(ops[i].klen, ops[i].vlen < 0 ? 0 : (uint64_t)ops[i].vlen);
    if (!rc)
        rc = stage(env, ops, m, total);
    if (rc) {
        dshm_journal_free(env, true);
        rc = dshm_finish_write(db, env, rc);
        free(ops);
        return rc;
    }
    dshm_journal *jr = DSHM_AT(env, hd->hd_batch);
    DSHM_CRASH_POINT("batch-staged");
    atomic_store_explicit(&jr->jr_state, DSHM_JR_COMMITTED, memory_order_release);
    DSHM_CRASH_POINT("batch-committed");
    bool opened = dshm_struct_begin(hd);
    for (uint64_t i = 0; i < jr->jr_n && !rc; i++) {
        rc = dshm_journal_apply(env, jr->jr_ent[i], &ops[i].h);   /* the journal is ops[0..m) in order */
        DSHM_CRASH_POINT("batch-apply");
    }
    if (rc) {
        /* Committed but not applied (damage met on the way): the window
         * stays odd, so no reader sees part of it, and the repair, now or
         * by the next lock holder, applies the rest. */
        rc = dshm_repair(env);
    } else {
        dshm_journal_free(env, false);
        atomic_fetch_add_explicit(&hd->hd_commit, 1, memory_order_seq_cst);
        dshm_struct_end(hd, opened);
    }
    if (!rc) {
        atomic_fetch_add_explicit(&db->db_batches, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&db->db_batch_ops, m, memory_order_relaxed);
    }
    if (commit)
        *commit = atomic_load_explicit(&hd->hd_commit, memory_order_relaxed);
    free(ops);
    return dshm_finish_write(db, env, rc);
}

int dshm_write_batch(dshm_db *db, size_t n, const char *keys, const uint64_t *klens,
                     const char *vals, const int64_t *vlens, uint64_t *commit) {
    GUARDED(int, write_batch_unguarded(db, n, keys, klens, vals, vlens, commit));
}

int dshm_batch_held(dshm_db *db, dshm_env *env, size_t n, const char *keys, const uint64_t *klens,
                    const char *vals, const int64_t *vlens, uint64_t *commit) {
    bop *ops = NULL;
    uint64_t room = 0;
    int rc = batch_args(n, keys, klens, vals, vlens, &ops, &room);
    if (!rc && n) {
        /* Room in this mapping for the batch, as dshm_wlock makes it, but
         * without letting the lock go: no other writer runs meanwhile, so
         * the file cannot move; a remap takes only the handle's db_lock. */
        dshm_header *hd = DSHM_HDR(env);
        uint64_t need = hd->hd_top + room + dshm_index_room(env, n);
        if (need < hd->hd_top)
            rc = DSHM_FULL;
        else if (need > env->ev_resv ||
                 atomic_load_explicit(&hd->hd_file_size, memory_order_relaxed) > env->ev_resv) {
            if ((rc = dshm_refresh(db, &env, need)) == 0 && env->ev_resv < need)
                rc = DSHM_FULL;
            dshm_guard_tls.locked = env;
        }
    }
    if (rc || n == 0) {
        /* Nothing published: give the lock back without a commit. */
        if (!rc && commit)
            *commit = atomic_load_explicit(&DSHM_HDR(env)->hd_commit, memory_order_acquire);
        free(ops);
        dshm_finish_write(db, env, DSHM_RETRY);
        return rc;
    }
    return batch_locked(db, env, ops, n, room, commit);
}

/* ---------------------------------------------------------------------- */
/* Reading many keys as of one instant                                     */

typedef struct many_ctx {
    size_t n;
    const char *keys;
    const uint64_t *klens;
    char *buf;
    size_t cap;
    int64_t *vlens;
    uint64_t *h;        /* hashes, for the file `env` */
    dshm_env *env;
    uint64_t commit;
    uint64_t need;
} many_ctx;

/* One attempt: DSHM_RETRY if a write committed while it read. */
static int64_t many_once(dshm_env *env, bool locked, void *p) {
    many_ctx *c = p;
    dshm_header *hd = DSHM_HDR(env);
    dshm_frame f;
    if (!dshm_frame_begin(hd, locked, &f))
        return DSHM_RETRY;
    if (c->env != env) {   /* the seed is per file */
        uint64_t off = 0;
        for (size_t i = 0; i < c->n; i++) {
            c->h[i] = dshm_key_hash(hd, c->keys + off, c->klens[i]);
            off += c->klens[i];
        }
        c->env = env;
    }
    /* A software pipeline across the keys (all hashed above): while key i
     * is read, the record of key i+PF_RECORD, the bucket of key i+PF_BUCKET
     * and (a large directory) the directory entry of key i+PF_DIR are
     * fetched. Only in a file of prefetch_min() bytes or more: in a small
     * store everything is in the caches and the hints cost. */
    uint64_t limit = atomic_load_explicit(&hd->hd_file_size, memory_order_acquire);
    uint64_t dir = atomic_load_explicit(&hd->hd_dir, memory_order_acquire);
    bool pf = c->n > 1 && limit >= prefetch_min();
    bool pf_dir = pf && dshm_dir_bytes(DSHM_DIR_DEPTH(dir) <= DSHM_MAX_DEPTH ? DSHM_DIR_DEPTH(dir) : 0) >= PF_DIR_MIN;
    uint64_t koff = 0, used = 0;
    for (size_t i = 0; i < c->n; i++) {
        if (pf) {
            if (pf_dir && i + PF_DIR < c->n)
                dshm_index_prefetch(env, dir, c->h[i + PF_DIR], limit, 0);
            if (i + PF_BUCKET < c->n)
                dshm_index_prefetch(env, dir, c->h[i + PF_BUCKET], limit, 1);
            if (i + PF_RECORD < c->n)
                dshm_index_prefetch(env, dir, c->h[i + PF_RECORD], limit, 2);
        }
        size_t room = used <= c->cap ? c->cap - used : 0;
        int64_t r = dshm_index_read(env, c->h[i], c->keys + koff, c->klens[i],
                                    room ? c->buf + used : NULL, room, locked);
        koff += c->klens[i];
        if (r == DSHM_NOTFOUND) {
            c->vlens[i] = -1;
            continue;
        }
        if (r < 0)
            return r;
        c->vlens[i] = r;
        used += (uint64_t)r;
    }
    if (!dshm_frame_valid(hd, locked, &f))
        return DSHM_RETRY;
    c->commit = f.fr_commit;
    c->need = used;
    return used > c->cap ? -ERANGE : (int64_t)used;
}

static int64_t get_many_unguarded(dshm_db *db, size_t n, const char *keys, const uint64_t *klens,
                              char *buf, size_t cap, int64_t *vlens, uint64_t *commit, uint64_t *need) {
    dshm_env *env;
    int64_t r;
    int arg = 0;
    uint64_t total = 0;
    for (size_t i = 0; i < n && klens && !arg; i++) {
        if (klens[i] > DSHM_MAX_KEY)
            arg = DSHM_TOOBIG;
        total += klens[i];
    }
    if (!arg && n && (!klens || !vlens || (total && !keys) || (!buf && cap)))
        arg = DSHM_INVALID;
    int rc = dshm_enter_checked(db, &env, arg);
    if (rc)
        return rc;
    many_ctx c = { n, keys, klens, buf, cap, vlens, NULL, NULL, 0, 0 };
    if (n && !(c.h = malloc(n * sizeof *c.h))) {
        dshm_leave(db);
        return -ENOMEM;
    }
    /* As a single get (dshm_get): damage met lock-free gets the locked
     * try of read_retry too, which runs a repair that is owed. */
    r = many_once(env, false, &c);
    if (r == DSHM_RETRY || r == DSHM_CORRUPT) {
        if (r == DSHM_RETRY)
            atomic_fetch_add_explicit(&db->db_multi_retries, 1, memory_order_relaxed);
        r = dshm_read_retry(db, &env, many_once, &c, DSHM_READ_TRIES);
    }
    if (r >= 0 || r == -ERANGE) {
        if (commit)
            *commit = c.commit;
        if (need)
            *need = c.need;
    }
    free(c.h);
    dshm_leave(db);
    return r;
}

int64_t dshm_get_many(dshm_db *db, size_t n, const char *keys, const uint64_t *klens,
                      char *buf, size_t cap, int64_t *vlens, uint64_t *commit, uint64_t *need) {
    GUARDED(int64_t, get_many_unguarded(db, n, keys, klens, buf, cap, vlens, commit, need));
}

/* ---------------------------------------------------------------------- */
/* A copy of the whole store as of one instant                             */

typedef struct whole_ctx {
    dshm_snap out;     /* the copy: every bucket's records, one after the other */
    dshm_snap sn;      /* one bucket */
    uint64_t commit;
} whole_ctx;

static int64_t whole_once(dshm_env *env, bool locked, void *p) {
    whole_ctx *c = p;
    dshm_header *hd = DSHM_HDR(env);
    dshm_frame f;
    if (!dshm_frame_begin(hd, locked, &f))
        return DSHM_RETRY;
    c->out.used = 0;
    uint64_t cursor = 0;
    for (;;) {
        int r = dshm_snap_read(env, cursor, cursor, true, locked, &c->sn);
        if (r == -ERANGE) {
            if ((r = dshm_snap_reserve(&c->sn, c->sn.used)))
                return r;
            continue;
        }
        if (r)
            return r;
        if ((r = dshm_snap_reserve(&c->out, c->out.used + c->sn.used)))
            return r;
        if (c->sn.used)
            memcpy(c->out.buf + c->out.used, c->sn.buf, c->sn.used);
        c->out.used += c->sn.used;
        if (c->sn.last)
            break;
        cursor = c->sn.next;
        /* Give up early once a write has committed. */
        if (!locked && atomic_load_explicit(&hd->hd_commit, memory_order_relaxed) != f.fr_commit)
            return DSHM_RETRY;
    }
    if (!dshm_frame_valid(hd, locked, &f))
        return DSHM_RETRY;
    c->commit = f.fr_commit;
    return (int64_t)c->out.used;
}

static int64_t snapshot_unguarded(dshm_db *db, char **out, uint64_t *commit) {
    dshm_env *env;
    int rc = dshm_enter_checked(db, &env, out ? 0 : DSHM_INVALID);
    if (rc)
        return rc;
    whole_ctx c = {0};
    /* A whole copy is long, and a busy writer would make every try fail:
     * the common rule (read_retry) with SNAPSHOT_TRIES lock-free tries
     * instead of DSHM_READ_TRIES, then under the lock (the read-only one
     * for a handle opened 'r', which writes nothing). */
    int64_t r = whole_once(env, false, &c);
    if (r == DSHM_RETRY || r == DSHM_CORRUPT) {
        if (r == DSHM_RETRY)
            atomic_fetch_add_explicit(&db->db_multi_retries, 1, memory_order_relaxed);
        r = dshm_read_retry(db, &env, whole_once, &c, SNAPSHOT_TRIES - 1);
    }
    free(c.sn.buf);
    if (r < 0) {
        free(c.out.buf);
    } else {
        *out = c.out.buf;
        if (commit)
            *commit = c.commit;
    }
    dshm_leave(db);
    return r;
}

int64_t dshm_snapshot(dshm_db *db, char **out, uint64_t *commit) {
    GUARDED(int64_t, snapshot_unguarded(db, out, commit));
}

void dshm_release(void *p) { free(p); }
