/**
 * @file dshm_guard.c
 * @brief Test hooks (crash points, colliding hashes) and the SIGBUS guard.
 *
 * Layer 0: calls no other file. What a SIGBUS inside a guarded call does
 * next (give the lock back, leave the call) is dshm_guard_fault, in
 * dshm_handle.c, which knows the lock and the handle.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dshm_base.h"
#include "dshm_guard.h"

/* ---------------------------------------------------------------------- */
/* Test hooks: DSHM_TEST_NOFLUSH=1 (the test suite: no fsync, no fdatasync, */
/* so its time does not depend on the disk), DSHM_CRASH_AT="point:n[,point:n...]", DSHM_TEST_COLLIDE=n   */
/* (DSHM_CRASH_SIGNAL=n: the signal sent at the point, SIGKILL by default;  */
/* SIGSTOP leaves a live writer frozen inside its change. n: the pass that  */
/* signals, or "every": each pass. DSHM_CRASH_NOTE=file: the point's name   */
/* is written there first, for a tracer that freezes at several points.)    */

#define CRASH_POINTS 4
int dshm_crash_armed;
int dshm_test_collide;
static struct { char name[64]; long count; } crash_at[CRASH_POINTS];   /* count -1: every pass */
static int crash_signal = SIGKILL;
static const char *crash_note;

static void crash_init(void) {
    const char *s = getenv("DSHM_CRASH_AT");
    for (unsigned i = 0; s && *s && i < CRASH_POINTS; i++) {
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        const char *colon = memchr(s, ':', len);
        if (colon && (size_t)(colon - s) < sizeof crash_at[i].name) {
            memcpy(crash_at[i].name, s, (size_t)(colon - s));
            crash_at[i].name[colon - s] = 0;
            crash_at[i].count = strncmp(colon + 1, "every", 5) == 0 ? -1 : strtol(colon + 1, NULL, 10);
            dshm_crash_armed |= crash_at[i].count != 0;
        }
        s = end ? end + 1 : NULL;
    }
    const char *sig = getenv("DSHM_CRASH_SIGNAL");
    if (sig && atoi(sig) > 0)
        crash_signal = atoi(sig);
    crash_note = getenv("DSHM_CRASH_NOTE");
}

void dshm_crash_hit(const char *point) {
    for (unsigned i = 0; i < CRASH_POINTS; i++) {
        if (!crash_at[i].count || strcmp(point, crash_at[i].name) != 0)
            continue;
        if (crash_at[i].count > 0 && --crash_at[i].count != 0)
            return;
        if (crash_note) {
            int fd = open(crash_note, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
            if (fd >= 0) {
                if (write(fd, point, strlen(point)) < 0) { /* best effort */ }
                close(fd);
            }
        }
        kill(getpid(), crash_signal);
        return;
    }
}

/* ---------------------------------------------------------------------- */
/* SIGBUS guard                                                            */

/* Another process may truncate the file under a mapping; touching a page
 * past the new end raises SIGBUS. Every public call that touches the
 * mapping runs under a per-thread guard (GUARDED): the handler jumps back
 * to the call, which returns DSHM_TRUNCATED instead of the process dying.
 * A SIGBUS outside a guarded call goes to the handler that was there
 * before (or the default action); so does one inside a guarded call at an
 * address outside the ranges the call recorded (dshm_guard_cover: the
 * handle's mapping it entered with or refreshed to, the header page mapped
 * writable for a wait) and the mapping whose writer lock it holds: a
 * caller's buffer in another file's truncated mapping, or a bug, is not a
 * truncation of the store. A call that maps a file of its own and enters
 * no handle (open, salvage) records no range and takes every fault. */
__attribute__((tls_model("initial-exec"))) _Thread_local dshm_guard dshm_guard_tls;
static struct sigaction old_bus;

/* Is the faulting address one the running call may touch? Async-signal-
 * safe: reads only this thread's guard and the locked mapping's bounds. */
static bool in_store(const dshm_guard *g, const void *addr) {
    if (!g->scoped)
        return true;
    uintptr_t a = (uintptr_t)addr;
    unsigned n = g->nrng < DSHM_GUARD_RANGES ? g->nrng : DSHM_GUARD_RANGES;
    atomic_signal_fence(memory_order_acquire);   /* the count before the ranges */
    for (unsigned i = 0; i < n; i++)
        if (a - g->rng[i].gr_lo < g->rng[i].gr_len)
            return true;
    const dshm_env *l = g->locked;
    return l && l->ev_base && a - (uintptr_t)l->ev_base < l->ev_resv;
}

static void bus_handler(int sig, siginfo_t *si, void *uc) {
    dshm_guard *g = &dshm_guard_tls;
    /* Ours: a fault the kernel raised (si_code > 0, e.g. BUS_ADRERR past
     * the end of a truncated file) inside a guarded call, at an address of
     * the store (in_store). A SIGBUS sent with kill() or sigqueue()
     * (si_code <= 0) is never taken for one. */
    if (g->active && si && si->si_code > 0 && in_store(g, si->si_addr)) {
        g->active = 0;
        siglongjmp(g->jb, 1);
    }
    /* Foreign: to the handler that was there before ours. */
    if (old_bus.sa_flags & SA_SIGINFO) {
        if (old_bus.sa_sigaction) {
            old_bus.sa_sigaction(sig, si, uc);
            return;
        }
    } else if (old_bus.sa_handler == SIG_IGN) {
        return;
    } else if (old_bus.sa_handler != SIG_DFL) {
        old_bus.sa_handler(sig);
        return;
    }
    /* The default action, as without this library: a fault re-runs the
     * access on return and ends the process; a sent signal is raised
     * again now (our handler is not left replaced by SIG_DFL in a process
     * that goes on). */
    signal(SIGBUS, SIG_DFL);
    if (!si || si->si_code <= 0)
        raise(SIGBUS);
}

static pthread_mutex_t guard_mu = PTHREAD_MUTEX_INITIALIZER;

/* Install bus_handler, keeping the handler it replaces (to chain to). Run
 * at the first open, and again at every open if another handler was
 * installed since (faulthandler, a runtime's own): ours goes back in
 * front, chaining to it. */
static void guard_init(void) {
    struct sigaction sa, cur;
    pthread_mutex_lock(&guard_mu);
    if (sigaction(SIGBUS, NULL, &cur) == 0 &&
        !((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == bus_handler)) {
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = bus_handler;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        old_bus = cur;
        sigaction(SIGBUS, &sa, NULL);
    }
    pthread_mutex_unlock(&guard_mu);
}

/* ---------------------------------------------------------------------- */
/* The interrupt hook (dshm_set_interrupt_hook)                            */

/* Set by the binding (once, at import), read by every wait for the writer
 * lock between two slices: acquire/release so the function is seen whole. */
static _Atomic(dshm_interrupt_fn) interrupt_hook;

void dshm_set_interrupt_hook(int (*fn)(void)) {
    atomic_store_explicit(&interrupt_hook, fn, memory_order_release);
}

bool dshm_interrupt_requested(void) {
    dshm_interrupt_fn fn = atomic_load_explicit(&interrupt_hook, memory_order_acquire);
    return fn && fn() != 0;
}

/* Test hooks once per process, at the first open; the handler at every open. */
static pthread_once_t hooks_once = PTHREAD_ONCE_INIT;

static int test_noflush;   /* DSHM_TEST_NOFLUSH=1: dshm_flush skips the system call */

int dshm_flush(int fd, bool data_only) {
    if (test_noflush)
        return 0;
    int r = data_only ? fdatasync(fd) : fsync(fd);
    return r != 0 && errno != EINVAL ? -errno : 0;   /* EINVAL: a file that cannot be flushed */
}

static void hooks_init(void) {
    const char *f = getenv("DSHM_TEST_NOFLUSH");
    test_noflush = f && *f && strcmp(f, "0") != 0;
    const char *c = getenv("DSHM_TEST_COLLIDE");
    if (c && *c) {
        long n = strtol(c, NULL, 10);
        dshm_test_collide = n < 0 ? 0 : n > 64 ? 64 : (int)n;
    }
    crash_init();
}

void dshm_hooks_init(void) {
    pthread_once(&hooks_once, hooks_init);
    guard_init();   /* at every open: back in front of a handler installed since */
}
