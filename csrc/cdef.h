/* cffi cdef: the part of dbm_shm.h that Python calls, in the subset of C
 * that cffi parses (no #include, no #ifdef). Kept in step with dbm_shm.h
 * by tests/api/test_cffi_smoke.py. */
#define DSHM_SUCCESS ...
#define DSHM_NOTFOUND ...
#define DSHM_BAD_MAGIC ...
#define DSHM_VERSION_MISMATCH ...
#define DSHM_CORRUPT ...
#define DSHM_READONLY ...
#define DSHM_NEED_RECOVERY ...
#define DSHM_FULL ...
#define DSHM_TOOBIG ...
#define DSHM_CLOSED ...
#define DSHM_KEYEXIST ...
#define DSHM_BUSY ...
#define DSHM_INVALID ...
#define DSHM_TRUNCATED ...
#define DSHM_LAST_ERRCODE ...
#define DSHM_RDONLY ...
#define DSHM_CREATE ...
#define DSHM_TRUNC ...
#define DSHM_SYNC ...
#define DSHM_NOOVERWRITE ...
#define DSHM_TRY ...
#define DSHM_LOCK_SLICE_MS ...
#define DSHM_SCAN_VALUES ...
#define DSHM_MAX_KEY ...
#define DSHM_MAX_VALUE ...

typedef struct dshm_db dshm_db;

typedef struct dshm_stat_t {
    uint64_t st_count;
    uint64_t st_file_size;
    uint64_t st_top;
    uint64_t st_live_bytes;
    uint64_t st_free_bytes;
    uint64_t st_depth;
    uint64_t st_buckets;
    uint64_t st_overflow;
    uint64_t st_slots;
    uint64_t st_commit;
    uint64_t st_format;
    uint64_t st_page_size;
    uint64_t st_lock_pid;
    uint64_t st_recoveries;
    uint64_t st_read_retries;
    uint64_t st_read_fallbacks;
    uint64_t st_reopens;
    uint64_t st_map_size;
    uint64_t st_lock_held_ns;
    uint64_t st_waiters;
    uint64_t st_writes;
    uint64_t st_batches;
    uint64_t st_batch_ops;
    uint64_t st_lock_waits;
    uint64_t st_lock_wait_ns;
    uint64_t st_waits;
    uint64_t st_wakeups;
    uint64_t st_multi_retries;
    uint64_t st_max_bytes;
    uint64_t st_evictions;
    uint64_t st_expired;
} dshm_stat_t;

int dshm_open(const char *path, int flags, int mode, dshm_db **out);
void dshm_close(dshm_db *db);
void dshm_free(dshm_db *db);
int64_t dshm_get(dshm_db *db, const char *key, size_t klen, char *buf, size_t cap);
int64_t dshm_get_try(dshm_db *db, const char *key, size_t klen, char *buf, size_t cap);
int dshm_put(dshm_db *db, const char *key, size_t klen, const char *val, size_t vlen, int flags);
int dshm_del(dshm_db *db, const char *key, size_t klen);
int64_t dshm_count(dshm_db *db);
int64_t dshm_firstkey(dshm_db *db, char *buf, size_t cap);
int64_t dshm_nextkey(dshm_db *db, const char *key, size_t klen, char *buf, size_t cap);
int64_t dshm_scan(dshm_db *db, uint64_t *cursor, int *done, char *buf, size_t cap, int flags, uint64_t *need);
int dshm_sync(dshm_db *db);
int dshm_commit_due_sync(dshm_db *db, int wait);
int dshm_clear(dshm_db *db);
int dshm_reorganize(dshm_db *db);
int dshm_stat(dshm_db *db, dshm_stat_t *st);
int64_t dshm_check(dshm_db *db, char *report, size_t cap);
int dshm_commit_id(dshm_db *db, uint64_t *out);
int dshm_wait(dshm_db *db, uint64_t since, int64_t timeout_ns, uint64_t *commit);
void dshm_interrupt(dshm_db *db);
void dshm_set_interrupt_hook(int (*fn)(void));
extern "Python" int _dshm_interrupt_hook(void);
int dshm_write_batch(dshm_db *db, size_t n, const char *keys, const uint64_t *klens,
                     const char *vals, const int64_t *vlens, uint64_t *commit);
int64_t dshm_get_many(dshm_db *db, size_t n, const char *keys, const uint64_t *klens,
                      char *buf, size_t cap, int64_t *vlens, uint64_t *commit, uint64_t *need);
int64_t dshm_snapshot(dshm_db *db, char **out, uint64_t *commit);
void dshm_release(void *p);
#define DSHM_DUMP_COMPAT ...
int64_t dshm_dump_encode(const char *recs, size_t n, size_t *pos, char *out, size_t cap, int flags, uint64_t *count, uint64_t *need);
const char *dshm_strerror(int rc);
const char *dshm_errhint(int rc);
int64_t dshm_pop(dshm_db *db, const char *key, size_t klen, char *buf, size_t cap);
int64_t dshm_popitem(dshm_db *db, char *buf, size_t cap, uint64_t *klen);
int dshm_incr(dshm_db *db, const char *key, size_t klen, int64_t delta, int64_t dflt, int64_t *out);
int dshm_incr_ttl(dshm_db *db, const char *key, size_t klen, int64_t delta, int64_t dflt, uint64_t deadline, int64_t *out);
int dshm_put_ttl(dshm_db *db, const char *key, size_t klen, const char *val, size_t vlen, int flags, uint64_t deadline);
int dshm_touch(dshm_db *db, const char *key, size_t klen, uint64_t deadline);
int64_t dshm_expire(dshm_db *db);
int dshm_set_max_bytes(dshm_db *db, uint64_t max_bytes);
int dshm_cas(dshm_db *db, const char *key, size_t klen, const char *exp, int64_t explen,
             const char *val, int64_t vlen);
int dshm_txn_begin(dshm_db *db, int64_t timeout_ns);
int64_t dshm_txn_get(dshm_db *db, const char *key, size_t klen, char *buf, size_t cap);
int dshm_txn_commit(dshm_db *db, size_t n, const char *keys, const uint64_t *klens,
                    const char *vals, const int64_t *vlens, uint64_t *commit);
int dshm_txn_abort(dshm_db *db);
int dshm_txn_replace(dshm_db *db, const char *newpath);

typedef struct dshm_salvage_t {
    uint64_t sv_pass;
    uint64_t sv_entry;
    uint64_t sv_page;
    uint64_t sv_slot;
    uint64_t sv_done;
    uint64_t sv_records;
    uint64_t sv_bad_records;
    uint64_t sv_bad_pages;
    uint64_t sv_cycles;
    uint64_t sv_entries;
    uint64_t sv_expected;
} dshm_salvage_t;
int64_t dshm_salvage(const char *path, dshm_salvage_t *sv, char *buf, size_t cap, uint64_t *need);
