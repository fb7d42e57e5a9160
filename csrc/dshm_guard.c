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
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dshm_internal.h"

/* ---------------------------------------------------------------------- */
/* Test hooks: DSHM_CRASH_AT="point:n", DSHM_TEST_COLLIDE=n                */
/* (DSHM_CRASH_SIGNAL=n: the signal sent at the point, SIGKILL by default;  */
/* SIGSTOP leaves a live writer frozen inside its change.)                  */

int dshm_crash_armed;
int dshm_test_collide;
static char crash_point[64];
static long crash_count;
static int crash_signal = SIGKILL;

static void crash_init(void) {
    const char *s = getenv("DSHM_CRASH_AT");
    const char *colon = s ? strrchr(s, ':') : NULL;
    if (!colon || (size_t)(colon - s) >= sizeof crash_point)
        return;
    memcpy(crash_point, s, (size_t)(colon - s));
    crash_point[colon - s] = 0;
    crash_count = strtol(colon + 1, NULL, 10);
    dshm_crash_armed = crash_count > 0;
    const char *sig = getenv("DSHM_CRASH_SIGNAL");
    if (sig && atoi(sig) > 0)
        crash_signal = atoi(sig);
}

void dshm_crash_hit(const char *point) {
    if (strcmp(point, crash_point) == 0 && --crash_count == 0)
        kill(getpid(), crash_signal);
}

/* ---------------------------------------------------------------------- */
/* SIGBUS guard                                                            */

/* Another process may truncate the file under a mapping; touching a page
 * past the new end raises SIGBUS. Every public call that touches the
 * mapping runs under a per-thread guard (GUARDED): the handler jumps back
 * to the call, which returns DSHM_TRUNCATED instead of the process dying.
 * A SIGBUS outside a guarded call goes to the handler that was there
 * before (or the default action). */
__attribute__((tls_model("initial-exec"))) _Thread_local dshm_guard dshm_guard_tls;
static struct sigaction old_bus;

static void bus_handler(int sig, siginfo_t *si, void *uc) {
    dshm_guard *g = &dshm_guard_tls;
    if (g->active) {
        g->active = 0;
        siglongjmp(g->jb, 1);
    }
    if (old_bus.sa_flags & SA_SIGINFO) {
        if (old_bus.sa_sigaction) {
            old_bus.sa_sigaction(sig, si, uc);
            return;
        }
    } else if (old_bus.sa_handler != SIG_DFL && old_bus.sa_handler != SIG_IGN) {
        old_bus.sa_handler(sig);
        return;
    }
    signal(SIGBUS, SIG_DFL);   /* returning re-runs the access: default action */
}

static void guard_init(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = bus_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &old_bus);
}

/* Test hooks and the handler, once per process, at the first open. */
static pthread_once_t hooks_once = PTHREAD_ONCE_INIT;

static void hooks_init(void) {
    const char *c = getenv("DSHM_TEST_COLLIDE");
    if (c && *c) {
        long n = strtol(c, NULL, 10);
        dshm_test_collide = n < 0 ? 0 : n > 64 ? 64 : (int)n;
    }
    crash_init();
    guard_init();
}

void dshm_hooks_init(void) {
    pthread_once(&hooks_once, hooks_init);
}
