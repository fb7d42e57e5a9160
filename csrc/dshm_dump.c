/**
 * @file dshm_dump.c
 * @brief The body of a GNU gdbm ASCII dump, encoded from a buffer of scan
 *        records (dshm_scan with DSHM_SCAN_VALUES, dshm_snapshot).
 *
 * Each record `[u32 klen][u64 vlen][u64 hash][key][value]` becomes its key
 * and its value, each as gdbm_dump writes a datum: a `#:len=N` line, then
 * the bytes in standard base64, 76 characters (57 bytes) a line, every
 * line ending in a newline; nothing for an empty datum, or one empty line
 * with DSHM_DUMP_COMPAT (see dbm_shm/_dumpwrite.py for why). The buffer is
 * the caller's memory, not the file: every length in it is checked against
 * the buffer before it is followed (DSHM_INVALID otherwise), and nothing is
 * written past @p cap.
 *
 * Layer 7: a pure function that reads no mapping; it sits above handles
 * only through the SIGBUS guard (GUARDED) every entry point runs under.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>

#include "dshm_base.h"
#include "dshm_handle.h"

#define LINE_BYTES 57u          /* input bytes per 76-character base64 line */
#define REC_HEAD   20u          /* u32 klen, u64 vlen, u64 hash */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* The '#:len=N' line of a datum of n bytes, written at out; its length. */
static size_t put_len(char *out, uint64_t n) {
    char digits[24];
    size_t d = 0;
    do {
        digits[d++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    memcpy(out, "#:len=", 6);
    for (size_t i = 0; i < d; i++)
        out[6 + i] = digits[d - 1 - i];
    out[6 + d] = '\n';
    return 7 + d;
}

/* Bytes the datum of n bytes takes in the dump. */
static uint64_t datum_size(uint64_t n, int compat) {
    uint64_t head = 7, m = n;
    do {
        head++;
        m /= 10;
    } while (m);
    if (n == 0)
        return head + (compat ? 1 : 0);
    return head + (n + 2) / 3 * 4 + (n + LINE_BYTES - 1) / LINE_BYTES;
}

/* Write the datum (size datum_size(n) already checked to fit) at out. */
static char *put_datum(char *out, const unsigned char *p, uint64_t n, int compat) {
    out += put_len(out, n);
    if (n == 0) {
        if (compat)
            *out++ = '\n';
        return out;
    }
    while (n) {
        uint64_t line = n < LINE_BYTES ? n : LINE_BYTES;
        uint64_t i = 0;
        for (; i + 3 <= line; i += 3) {
            uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
            out[0] = b64[v >> 18];
            out[1] = b64[(v >> 12) & 63];
            out[2] = b64[(v >> 6) & 63];
            out[3] = b64[v & 63];
            out += 4;
        }
        if (i < line) {          /* the last 1 or 2 bytes of the datum */
            uint32_t v = (uint32_t)p[i] << 16;
            if (i + 1 < line)
                v |= (uint32_t)p[i + 1] << 8;
            out[0] = b64[v >> 18];
            out[1] = b64[(v >> 12) & 63];
            out[2] = i + 1 < line ? b64[(v >> 6) & 63] : '=';
            out[3] = '=';
            out += 4;
        }
        *out++ = '\n';
        p += line;
        n -= line;
    }
    return out;
}

static int64_t encode_unguarded(const char *recs, size_t n, size_t *pos, char *out,
                                size_t cap, int flags, uint64_t *count, uint64_t *need) {
    if (!recs || !pos || !out || !count || !need || *pos > n || (flags & ~DSHM_DUMP_COMPAT))
        return DSHM_INVALID;
    int compat = (flags & DSHM_DUMP_COMPAT) != 0;
    size_t at = *pos, used = 0;
    uint64_t done = 0;
    while (at < n) {
        uint32_t kl;
        uint64_t vl;
        if (n - at < REC_HEAD)
            return DSHM_INVALID;
        memcpy(&kl, recs + at, sizeof kl);
        memcpy(&vl, recs + at + 4, sizeof vl);
        uint64_t room = n - at - REC_HEAD;
        if (kl > room || vl > room - kl)
            return DSHM_INVALID;
        uint64_t size = datum_size(kl, compat) + datum_size(vl, compat);
        if (size > cap - used) {
            if (done == 0) {     /* not even one record fits */
                *need = size;
                return -ERANGE;
            }
            break;
        }
        const unsigned char *k = (const unsigned char *)recs + at + REC_HEAD;
        char *o = put_datum(out + used, k, kl, compat);
        o = put_datum(o, k + kl, vl, compat);
        used = (size_t)(o - out);
        at += REC_HEAD + (size_t)kl + (size_t)vl;
        done++;
    }
    *pos = at;
    *count += done;
    return (int64_t)used;
}

int64_t dshm_dump_encode(const char *recs, size_t n, size_t *pos, char *out, size_t cap,
                         int flags, uint64_t *count, uint64_t *need) {
    GUARDED(int64_t, encode_unguarded(recs, n, pos, out, cap, flags, count, need));
}
