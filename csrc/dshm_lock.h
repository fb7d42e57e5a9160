/**
 * @file dshm_lock.h
 * @brief The robust writer mutex (dshm_lock.c): reports a repair owed, never
 *        runs it.
 *
 * Layer 2.
 */
#ifndef DSHM_LOCK_H
#define DSHM_LOCK_H

#include "dshm_base.h"

int dshm_mutex_init(dshm_header *hd);
/** The writer lock's futex word as glibc keeps it, read into *w without
 *  taking the lock: 0 when free; while held, the holder's thread id (with
 *  DSHM_LOCK_WAITERS if others sleep on it); DSHM_LOCK_OWNER_DIED once the
 *  kernel saw the holder die. False where the C library is not glibc. */
bool dshm_lock_word(const dshm_header *hd, uint32_t *w);
#define DSHM_LOCK_OWNER_DIED 0x40000000u   /* FUTEX_OWNER_DIED */
#define DSHM_LOCK_WAITERS    0x80000000u   /* FUTEX_WAITERS */
#define DSHM_LOCK_TID_MASK   0x3fffffffu   /* FUTEX_TID_MASK */
/** The mutex is of the kind dshm_mutex_init makes (glibc; true elsewhere).
 *  One of another kind (damage) is never locked: it is reset, by an opener
 *  that may write the file and has it to itself. */
bool dshm_mutex_kind_ours(const dshm_header *hd);
/** The lock's holder died and nobody took the lock since: a repair is owed. */
bool dshm_lock_owner_died(const dshm_header *hd);
/** The mutex's bytes are not as any locker leaves them (glibc only; false
 *  elsewhere): a read-only handle does not take it. */
bool dshm_lock_damaged(const dshm_header *hd);
/** Take the writer lock for a handle that must write nothing (opened 'r'):
 *  no hd_lock_pid, no repair. Returns 0 with the lock held (*owed set if
 *  hd_repair asks for a repair), DSHM_NEED_RECOVERY without it when a
 *  repair is owed that the lock cannot be taken past (its holder died,
 *  a holder that no longer exists, an unusable mutex), or an error. */
int dshm_lock_ro(dshm_env *env, bool *owed);
void dshm_unlock_ro(dshm_env *env);
/** Take the writer lock to write. Returns 0 with the lock held and *owed
 *  set if a repair is owed (its holder died, or hd_repair, or allocator
 *  fields that do not match their checksum): the caller runs it
 *  (dshm_lock_repair) before it writes. Never runs the repair itself.
 *  Without `wait`, DSHM_BUSY (not held) where another holds it; with
 *  `wait`, the wait runs in slices (DSHM_LOCK_SLICE_MS): DSHM_TRUNCATED for
 *  a file cut below its header, -EINTR when the interrupt hook asks, and
 *  DSHM_BUSY once this thread's dshm_lock_deadline (a transaction's
 *  timeout) passed with another holding it. */
int dshm_lock_rw(dshm_env *env, bool *owed, bool wait);
void dshm_unlock_rw(dshm_env *env);
int dshm_mutex_probe(dshm_header *hd, bool *repair, bool *reinit);
/** Take a header's mutex, waiting at most wait_ns (monotonic): 0 (held;
 *  a dead holder's repair marked in hd_repair first), DSHM_BUSY on
 *  timeout, DSHM_NEED_RECOVERY or -errno. */
int dshm_mutex_lock_timed(dshm_header *hd, uint64_t wait_ns);
/** When non-zero, the monotonic time (dshm_now_ns) past which this
 *  thread's waiting dshm_lock_rw gives up with DSHM_BUSY (the lock held by
 *  another). Set around one take by a transaction's begin (dshm_txn.c). */
extern _Thread_local uint64_t dshm_lock_deadline;

#endif /* DSHM_LOCK_H */
