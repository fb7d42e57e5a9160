/**
 * @file dshm_rmw.c
 * @brief Read-modify-write in one hold of the writer lock: dshm_incr (a
 *        counter stored as ASCII decimal) and dshm_cas (compare and set).
 *
 * Each reads the key under the lock (no other writer can run), decides,
 * and writes through the one put or delete protocol (dshm_put_locked,
 * dshm_del_locked), so a writer killed at any instruction leaves the old
 * value or the new one, as for a put or a delete.
 *
 * Layer 8: calls writes (put_locked, del_locked, finish_write), handles
 * (the start of a write) and the index.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dshm_base.h"
#include "dshm_hash.h"
#include "dshm_index.h"
#include "dshm_handle.h"
#include "dshm_write.h"

#define NUM_CAP 32   /* bytes read of a counter: "-9223372036854775808" is 20 */

/* Parse an ASCII decimal int64 (optional sign, digits, nothing else; at
 * most NUM_CAP - 1 bytes). 0, DSHM_INVALID (not an integer) or -ERANGE. */
static int parse_i64(const char *s, size_t n, int64_t *out) {
    size_t i = 0;
    bool neg = false;
    if (n && (s[0] == '-' || s[0] == '+')) {
        neg = s[0] == '-';
        i = 1;
    }
    if (i == n)
        return DSHM_INVALID;
    uint64_t v = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return DSHM_INVALID;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (lim - d) / 10)
            return -ERANGE;
        v = v * 10 + d;
    }
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

static int incr_unguarded(dshm_db *db, const char *key, size_t klen, int64_t delta, int64_t dflt,
                          uint64_t deadline, int64_t *out) {
    dshm_env *env;
    int arg = (!key && klen) || !out ? DSHM_INVALID : klen > DSHM_MAX_KEY ? DSHM_TOOBIG : 0;
    int rc = dshm_write_enter(db, &env, arg, arg ? 0 : dshm_rec_size(klen, NUM_CAP), DSHM_ROOM_PUT, true);
    if (rc)
        return rc;
    uint64_t h = dshm_key_hash(DSHM_HDR(env), key, klen);
    char num[NUM_CAP];
    int64_t cur = dflt;
    int64_t n = dshm_index_read(env, h, key, klen, num, sizeof num, true);
    if (n >= 0 && (size_t)n >= sizeof num)
        rc = DSHM_INVALID;   /* too long to be an int64 */
    else if (n >= 0)
        rc = parse_i64(num, (size_t)n, &cur);
    else if (n != DSHM_NOTFOUND)
        rc = (int)n;
    if (!rc && ((delta > 0 && cur > INT64_MAX - delta) || (delta < 0 && cur < INT64_MIN - delta)))
        rc = -ERANGE;
    if (rc)   /* changed nothing: not counted as a write */
        return dshm_finish_write(db, env, rc);
    cur += delta;
    /* Format without printf: digits from the end. */
    char *e = num + sizeof num, *p = e;
    uint64_t u = cur < 0 ? 0 - (uint64_t)cur : (uint64_t)cur;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (cur < 0)
        *--p = '-';
    dshm_putx x = {deadline, 0, true, false};   /* a live counter keeps its deadline */
    rc = dshm_put_locked(env, h, key, klen, p, (size_t)(e - p), 0, &x);
    if (!rc)
        *out = cur;
    return dshm_finish_write(db, env, rc);
}

/* The stored value of the key at h equals exp (explen < 0: the key is
 * absent)? 1 yes, 0 no, or a negative error. */
static int matches(dshm_env *env, uint64_t h, const char *key, size_t klen, const char *exp, int64_t explen) {
    char small[64];
    char *buf = small;
    size_t cap = explen > 0 ? (size_t)explen : 0;
    if (cap > sizeof small && !(buf = malloc(cap)))
        return -ENOMEM;
    int64_t n = dshm_index_read(env, h, key, klen, buf, cap, true);
    int r;
    if (n == DSHM_NOTFOUND)
        r = explen < 0;
    else if (n < 0)
        r = (int)n;
    else
        r = explen >= 0 && n == explen && (n == 0 || memcmp(buf, exp, (size_t)n) == 0);
    if (buf != small)
        free(buf);
    return r;
}

static int cas_unguarded(dshm_db *db, const char *key, size_t klen, const char *exp, int64_t explen,
                         const char *val, int64_t vlen) {
    dshm_env *env;
    int arg = (!key && klen) || (explen > 0 && !exp) || (vlen > 0 && !val) ? DSHM_INVALID
            : klen > DSHM_MAX_KEY || (vlen > 0 && (uint64_t)vlen > DSHM_MAX_VALUE) ? DSHM_TOOBIG : 0;
    uint64_t room = arg || vlen < 0 ? 0 : dshm_rec_size(klen, (uint64_t)vlen);
    int rc = dshm_write_enter(db, &env, arg, room, vlen < 0 ? 0 : DSHM_ROOM_PUT, true);
    if (rc)
        return rc;
    uint64_t h = dshm_key_hash(DSHM_HDR(env), key, klen);
    int m = matches(env, h, key, klen, exp, explen);
    if (m <= 0) {   /* no match (changed nothing) or an error */
        dshm_finish_write(db, env, m < 0 ? m : DSHM_RETRY);
        return m;
    }
    if (vlen >= 0) {
        rc = dshm_put_locked(env, h, key, klen, val, (size_t)vlen, 0, NULL);
    } else {
        dshm_pos pos;
        rc = dshm_index_find(env, h, key, klen, &pos);
        if (rc == 0)
            rc = dshm_del_locked(env, &pos, "cas-removed");
        else if (rc == DSHM_NOTFOUND)
            rc = 0;   /* expected absent, asked to delete: nothing to do */
    }
    rc = dshm_finish_write(db, env, rc);
    return rc ? rc : 1;
}

int dshm_incr(dshm_db *db, const char *key, size_t klen, int64_t delta, int64_t dflt, int64_t *out) {
    GUARDED(int, incr_unguarded(db, key, klen, delta, dflt, 0, out));
}

int dshm_incr_ttl(dshm_db *db, const char *key, size_t klen, int64_t delta, int64_t dflt, uint64_t deadline,
                  int64_t *out) {
    GUARDED(int, incr_unguarded(db, key, klen, delta, dflt, deadline, out));
}

int dshm_cas(dshm_db *db, const char *key, size_t klen, const char *exp, int64_t explen,
             const char *val, int64_t vlen) {
    GUARDED(int, cas_unguarded(db, key, klen, exp, explen, val, vlen));
}
