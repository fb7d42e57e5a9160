/**
 * @file dshm_handle.c
 * @brief Handles: open, close and free; entering and leaving a call
 *        (following a reorganize or a growth past the mapping); the writer
 *        lock taken for a handle (wlock, rlock, the start of every write);
 *        and what a SIGBUS inside a guarded call leaves to undo.
 *
 * Layer 6: calls files and mappings, recovery (lock-and-repair), the lock,
 * the waker and the guard.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dshm_base.h"
#include "dshm_guard.h"
#include "dshm_wake.h"
#include "dshm_index.h"
#include "dshm_lock.h"
#include "dshm_recover.h"
#include "dshm_file.h"
#include "dshm_handle.h"

/* Replace the handle's mapping: after a reorganize (the path now names a
 * new file), or when the file outgrew this mapping's reservation. The old
 * mapping is retired, and unmapped by reclaim() once no call that may have
 * loaded it is in flight. */
static int refresh(dshm_db *db, dshm_env **envp, uint64_t want, bool replaced) {
    int rc = 0;
    pthread_mutex_lock(&db->db_lock);
    dshm_guard_tls.db_locked = &db->db_lock;   /* a SIGBUS below gives it back */
    dshm_env *cur = atomic_load_explicit(&db->db_env, memory_order_acquire);
    dshm_header *hd = DSHM_HDR(cur);
    dshm_env *nenv = NULL;
    uint64_t commit = atomic_load_explicit(&hd->hd_commit, memory_order_acquire);
    if (replaced || (atomic_load_explicit(&hd->hd_moved, memory_order_acquire) && !dshm_moved_stale(cur, commit))) {
        rc = dshm_env_open(db->db_path, db->db_flags & DSHM_RDONLY, 0, want, &nenv, NULL);
        struct stat a, b;
        if (!rc && fstat(nenv->ev_fd, &a) == 0 && fstat(cur->ev_fd, &b) == 0 &&
            a.st_ino == b.st_ino && a.st_dev == b.st_dev) {
            /* The path still names this file: the flag outlived a crash
             * between reorganize's rename and its directory sync. A handle
             * that may write clears it under the lock; a read-only one
             * writes nothing and remembers it as stale until the next
             * commit (a writer clears it before it commits). */
            dshm_env_free(nenv);
            nenv = NULL;
            if (!(db->db_flags & DSHM_RDONLY) && cur->ev_writable) {
                if (dshm_lock_repair(cur, NULL, true) == 0) {
                    /* Looked at again under the lock: an 'n' or reorganize
                     * renames over the path while it holds this lock. */
                    struct stat named;
                    if (stat(db->db_path, &named) == 0 && named.st_ino == b.st_ino && named.st_dev == b.st_dev)
                        atomic_store_explicit(&hd->hd_moved, 0, memory_order_release);
                    dshm_unlock_rw(cur);
                }
            } else {
                atomic_store_explicit(&cur->ev_stale_moved, commit + 1, memory_order_relaxed);
            }
        } else if (!rc) {
            atomic_fetch_add_explicit(&db->db_reopens, 1, memory_order_relaxed);
        }
    } else {
        uint64_t size = atomic_load_explicit(&hd->hd_file_size, memory_order_acquire);
        if (size > cur->ev_resv || want > cur->ev_resv) {
            nenv = calloc(1, sizeof *nenv);
            if (!nenv) {
                rc = -ENOMEM;
            } else {
                nenv->ev_writable = cur->ev_writable;
                nenv->ev_fd = fcntl(cur->ev_fd, F_DUPFD_CLOEXEC, 0);
                if (nenv->ev_fd < 0)
                    rc = -errno;
                else
                    rc = dshm_env_map(nenv, size, (size > want ? size : want) * 2);
                if (rc) {
                    dshm_env_free(nenv);
                    nenv = NULL;
                }
            }
        }
    }
    if (nenv) {
        atomic_store_explicit(&db->db_env, nenv, memory_order_seq_cst);
        cur->ev_older = db->db_retired;
        db->db_retired = cur;
        atomic_store_explicit(&db->db_has_retired, 1, memory_order_relaxed);
        cur = nenv;
    }
    dshm_guard_cover(cur->ev_base, cur->ev_resv);   /* the call touches it from here */
    dshm_guard_tls.db_locked = NULL;
    pthread_mutex_unlock(&db->db_lock);
    *envp = cur;
    return rc;
}

int dshm_refresh(dshm_db *db, dshm_env **envp, uint64_t want) {
    return refresh(db, envp, want, false);
}

bool dshm_path_replaced(dshm_db *db, dshm_env *env) {
    struct stat named;
    return stat(db->db_path, &named) == 0 &&
           ((uint64_t)named.st_ino != env->ev_ino || (uint64_t)named.st_dev != env->ev_dev);
}

int dshm_follow_path(dshm_db *db, dshm_env **envp) {
    dshm_env *env = *envp;
    if (!(db->db_flags & DSHM_RDONLY) && env->ev_writable) {
        /* Without the lock: the flag only ever goes from 0 to 1 for a
         * file the path no longer names (a lock holder clears it only
         * after finding, under the lock, that the path names this file;
         * the path was replaced under the lock, so both cannot be seen). */
        atomic_store_explicit(&DSHM_HDR(env)->hd_moved, 1, memory_order_release);
        dshm_wake_waiters(env);
    }
    atomic_store_explicit(&env->ev_stale_moved, 0, memory_order_relaxed);
    return refresh(db, envp, 0, true);
}

/* Unmap superseded mappings once no call is in flight: a call that
 * entered later loads the current mapping, never a retired one. */
void dshm_reclaim(dshm_db *db) {
    dshm_env *old = NULL;
    pthread_mutex_lock(&db->db_lock);
    if (atomic_load_explicit(&db->db_inflight, memory_order_seq_cst) == 0) {
        old = db->db_retired;
        db->db_retired = NULL;
        atomic_store_explicit(&db->db_has_retired, 0, memory_order_relaxed);
    }
    pthread_mutex_unlock(&db->db_lock);
    dshm_env_free(old);
}

/* Remove "<path>.dshm-reorg-<pid>" and "<path>.dshm-new-<pid>" copies whose
 * writer died before renaming them into place (found after a recovery). */
static void remove_orphans(const char *path) {
    char *copy = strdup(path);
    if (!copy)
        return;
    char *slash = strrchr(copy, '/');
    const char *dir = slash ? (slash == copy ? "/" : copy) : ".";
    const char *base = slash ? slash + 1 : copy;
    if (slash)
        *slash = 0;
    size_t blen = strlen(base);
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        const char *name = de->d_name, *rest;
        if (strncmp(name, base, blen) != 0)
            continue;
        rest = name + blen;
        if (strncmp(rest, ".dshm-reorg-", 12) == 0)
            rest += 12;
        else if (strncmp(rest, ".dshm-new-", 10) == 0)
            rest += 10;
        else
            continue;
        char *end;
        long pid = strtol(rest, &end, 10);
        bool dead = *end == 0 && pid > 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH;
        if (dead)
            unlinkat(dirfd(d), name, 0);
    }
    if (d)
        closedir(d);
    free(copy);
}

/* After a recovery: a writer that died inside reorganize between the rename
 * and marking this file moved left the path naming another store. Mark
 * this one moved so every handle follows the path. Runs under the lock. */
static void check_replaced(dshm_db *db, dshm_env *env) {
    struct stat mine, named;
    remove_orphans(db->db_path);
    if (fstat(env->ev_fd, &mine) != 0 || stat(db->db_path, &named) != 0)
        return;
    if (mine.st_ino != named.st_ino || mine.st_dev != named.st_dev)
        atomic_store_explicit(&DSHM_HDR(env)->hd_moved, 1, memory_order_release);
}

/* Take the writer lock on the current file, with room in the mapping for
 * `room` more bytes. Follows a reorganize that happened while waiting. */
int dshm_wlock(dshm_db *db, dshm_env **envp, uint64_t room, bool wait) {
    /* This thread holds the lock for the handle's transaction: the mutex
     * is not recursive, so taking it again would hang. */
    if (dshm_txn_mine(db))
        return -EDEADLK;
    for (;;) {
        dshm_env *env = *envp;
        if (!env->ev_writable)
            return DSHM_READONLY;
        bool recovered;
        dshm_header *hd = DSHM_HDR(env);
        /* Time the wait only when the lock looked taken: no clock read on
         * the uncontended path. */
        bool held = atomic_load_explicit(&hd->hd_lock_pid, memory_order_relaxed) != 0;
        uint64_t t0 = held ? dshm_now_ns() : 0;
        int rc = dshm_lock_repair(env, &recovered, wait);
        if (rc)
            return rc;
        if (held) {
            atomic_fetch_add_explicit(&db->db_lock_waits, 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&db->db_lock_wait_ns, dshm_now_ns() - t0, memory_order_relaxed);
        }
        if (recovered)
            check_replaced(db, env);
        uint64_t size = atomic_load_explicit(&hd->hd_file_size, memory_order_relaxed);
        uint64_t need = hd->hd_top + room;
        bool moved = atomic_load_explicit(&hd->hd_moved, memory_order_relaxed);
        if (!moved && size <= env->ev_resv && need <= env->ev_resv && need >= hd->hd_top)
            return 0;
        dshm_unlock_rw(env);
        if (need < hd->hd_top)
            return DSHM_FULL;
        if ((rc = dshm_refresh(db, envp, moved ? 0 : need)))
            return rc;
        if (!moved && (*envp)->ev_resv < need)
            return DSHM_FULL;
    }
}

/* Take the writer lock for a read-only handle's definitive read: no
 * hd_lock_pid, no repair (dshm_lock_ro). Follows a reorganize, or a growth
 * past the mapping, that happened while it waited, as wlock() does. */
int dshm_rlock(dshm_db *db, dshm_env **envp, bool *owed) {
    for (;;) {
        dshm_env *env = *envp;
        int rc = dshm_lock_ro(env, owed);
        if (rc)
            return rc;
        dshm_header *hd = DSHM_HDR(env);
        uint64_t size = atomic_load_explicit(&hd->hd_file_size, memory_order_relaxed);
        bool moved = atomic_load_explicit(&hd->hd_moved, memory_order_relaxed) &&
                     !dshm_moved_stale(env, atomic_load_explicit(&hd->hd_commit, memory_order_relaxed));
        if (!moved && size <= env->ev_resv)
            return 0;
        dshm_unlock_ro(env);
        if ((rc = dshm_refresh(db, envp, 0)))
            return rc;
        if (*envp == env && !moved)
            return DSHM_FULL;   /* could not map the grown file */
    }
}

static int open_unguarded(const char *path, int flags, int mode, dshm_db **out) {
    if (!path || !out || (flags & ~(DSHM_RDONLY | DSHM_CREATE | DSHM_TRUNC | DSHM_SYNC)) ||
        ((flags & DSHM_RDONLY) && (flags & (DSHM_CREATE | DSHM_TRUNC))))
        return DSHM_INVALID;
    dshm_db *db = calloc(1, sizeof *db);
    if (!db)
        return -ENOMEM;
    db->db_path = strdup(path);
    db->db_flags = flags & (DSHM_RDONLY | DSHM_SYNC);
    db->db_pid = (int)getpid();
    if (!db->db_path) {
        free(db);
        return -ENOMEM;
    }
    pthread_mutex_init(&db->db_lock, NULL);
    dshm_env *env = NULL;
    int rc = 0;
    if (flags & DSHM_TRUNC) {
        /* 'n': a new, empty store. In place if no one else has the file
         * open; otherwise a fresh file is renamed over the path and the
         * old one marked moved, so its users follow. */
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, mode);
        if (fd < 0) {
            rc = -errno;
            goto fail;
        }
        struct stat st;
        if (fstat(fd, &st) != 0) {
            rc = -errno;
        } else if (st.st_size == 0 && flock(fd, LOCK_EX | LOCK_NB) == 0) {
            /* A new (or empty) file: the store is made in it. */
            rc = dshm_init_file(fd, NULL);   /* syncs the empty store */
            if (!rc)
                dshm_sync_parent(path);      /* and the name of a file 'n' created */
        } else {
            /* A fresh store renamed over the path (through a symbolic link:
             * over the file it names), and the old one marked moved for
             * whoever has it open: a power loss before the rename is on
             * disk leaves the old store whole, never a half-made one. */
            char *real = realpath(path, NULL);
            rc = dshm_replace_file(real ? real : path, fd);   /* syncs the new file and the rename */
            free(real);
        }
        close(fd);
        if (rc)
            goto fail;
    }
    bool repaired;
    rc = dshm_env_open(path, flags & (DSHM_RDONLY | DSHM_CREATE), mode, 0, &env, &repaired);
    if (rc)
        goto fail;
    /* Reopen and reorganize use the file's absolute, resolved name: a
     * chdir() or a symlink must not send them elsewhere. */
    char *resolved = realpath(path, NULL);
    if (resolved) {
        free(db->db_path);
        db->db_path = resolved;
    }
    if (repaired)
        check_replaced(db, env);
    atomic_store_explicit(&db->db_path_due, dshm_coarse_ns() + DSHM_PATH_CHECK_NS, memory_order_relaxed);
    atomic_store_explicit(&db->db_env, env, memory_order_release);
    *out = db;
    return 0;
fail:
    pthread_mutex_destroy(&db->db_lock);
    free(db->db_path);
    free(db);
    return rc;
}

int dshm_open(const char *path, int flags, int mode, dshm_db **out) {
    dshm_hooks_init();   /* the SIGBUS handler back in front, at every open */
    /* The probe and a repair at open touch the mapping: under the guard. */
    GUARDED(int, open_unguarded(path, flags, mode, out));
}

/* For dshm_close(): the closed flag is set; wake this handle's waiters,
 * if it has any, under the SIGBUS guard (the file may have been truncated
 * under the mapping). */
static int close_wake_unguarded(dshm_db *db) {
    if (atomic_load_explicit(&db->db_waiting, memory_order_seq_cst)) {
        dshm_env *env = atomic_load_explicit(&db->db_env, memory_order_seq_cst);
        if (env) {
            /* The ranges the wake touches: the mapping and the header page
             * mapped writable for a read-only handle's waiters. */
            dshm_guard_cover(env->ev_base, env->ev_resv);
            dshm_guard_cover_waiters(db, env);
        }
        dshm_wake_handle(db);
    }
    return 0;
}

static int close_wake(dshm_db *db) { GUARDED(int, close_wake_unguarded(db)); }

void dshm_close(dshm_db *db) {
    if (!db || atomic_exchange_explicit(&db->db_closed, 1, memory_order_seq_cst))
        return;
    /* This handle's threads asleep in dshm_wait() end their call. */
    (void)close_wake(db);
    /* Wait for the calls other threads have in flight; a child after
     * fork() has none (its copy of the counter may hold its parent's). */
    while (db->db_pid == (int)getpid() && atomic_load_explicit(&db->db_inflight, memory_order_seq_cst) != 0)
        sched_yield();
    pthread_mutex_lock(&db->db_lock);
    dshm_env *env = atomic_exchange_explicit(&db->db_env, NULL, memory_order_acq_rel);
    dshm_env *old = db->db_retired;
    db->db_retired = NULL;
    pthread_mutex_unlock(&db->db_lock);
    dshm_env_free(env);
    dshm_env_free(old);
}

void dshm_free(dshm_db *db) {
    if (!db)
        return;
    dshm_close(db);
    pthread_mutex_destroy(&db->db_lock);
    free(db->db_path);
    free(db);
}

/* Back from a SIGBUS inside a guarded call: unblock the signal, give back
 * the writer lock if this thread held it (marking the store for repair),
 * and end the call. */
void dshm_guard_fault(dshm_guard *g) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGBUS);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    dshm_env *env = g->locked;
    int ro = g->locked_ro;
    g->locked = NULL;
    g->locked_ro = 0;
    struct stat st;
    if (env && fstat(env->ev_fd, &st) == 0 && st.st_size >= (off_t)DSHM_HEADER_SIZE) {
        if (ro) {
            dshm_unlock_ro(env);   /* a read-only taker changed nothing */
        } else {
            DSHM_HDR(env)->hd_repair = 1;
            dshm_unlock_rw(env);
        }
    }
    if (g->db_locked) {
        pthread_mutex_t *m = g->db_locked;
        g->db_locked = NULL;
        pthread_mutex_unlock(m);
    }
    if (g->entered)
        dshm_leave(g->entered);
}

int dshm_write_enter(dshm_db *db, dshm_env **envp, int argrc, uint64_t bytes, uint64_t keys, bool wait) {
    /* A bad argument first, then a read-only handle, then what the
     * arguments ask for that cannot be had (too big, too many). */
    if (argrc != DSHM_INVALID && (db && (db->db_flags & DSHM_RDONLY)))
        argrc = DSHM_READONLY;
    int rc = dshm_enter_checked(db, envp, argrc);
    if (rc == 0 && (rc = dshm_wlock(db, envp, bytes + dshm_index_room(*envp, keys), wait)))
        dshm_leave(db);
    return rc;
}

int dshm_end_replace(dshm_db *db, dshm_env *env, int rc) {
    dshm_unlock_rw(env);
    dshm_wake_waiters(env);
    if (!rc) {
        dshm_env *cur;
        rc = dshm_refresh(db, &cur, 0);
    }
    dshm_leave(db);
    return rc;
}
