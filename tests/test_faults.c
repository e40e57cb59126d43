// Fault tests at the library level (issue 11): a disk that fills up, simulated with a
// file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored, so write() fails with EFBIG as it fails
// with ENOSPC on a full disk). A file written atomically is either the old complete file
// or the new complete file, never a partial one, and no temporary file stays behind; the
// store keeps every committed metrics batch and none of the batch that hit the limit.
// tests/test_faults.sh drives the same faults through the CLI and the worker.
#include <dirent.h>
#include <ftw.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "lora.h"
#include "safetensors.h"
#include "store.h"

static char tmpdir[64];

static const lora_shape_t flan_small = {.d_model = 512, .inner = 384, .d_ff = 1024, .vocab = 32128,
                                        .n_enc = 8, .n_dec = 8, .gated = 1, .n_heads = 6, .buckets = 32};

static int rm_entry(const char *p, const struct stat *sb, int t, struct FTW *f) {
    (void)sb;
    (void)t;
    (void)f;
    return remove(p);
}

// Lowers the file-size limit of this process to bytes (0: back to what it was).
static void limit_file_size(rlim_t bytes) {
    static struct rlimit saved;
    static int have_saved;
    if (!have_saved) {
        getrlimit(RLIMIT_FSIZE, &saved);
        have_saved = 1;
    }
    struct rlimit r = saved;
    if (bytes) r.rlim_cur = bytes;
    setrlimit(RLIMIT_FSIZE, &r);
}

// Number of entries of dir whose name contains needle (NULL: all but . and ..).
static int count_entries(const char *dir, const char *needle) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && (!needle || strstr(e->d_name, needle))) n++;
    closedir(d);
    return n;
}

static long file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

static void test_atomic_write_keeps_old_file(void) {
    char dir[128], path[160];
    snprintf(dir, sizeof dir, "%s/atomic", tmpdir);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/keep.json", dir);
    lb_err_t err = {0};
    const char *old = "{\"old\": true}\n";
    EXPECT(lb_write_file_atomic(path, old, strlen(old), &err) == 0);
    size_t big_n = 64 * 1024;
    char *big = xmalloc(big_n);
    memset(big, 'x', big_n);
    limit_file_size(16 * 1024);
    int rc = lb_write_file_atomic(path, big, big_n, &err);
    limit_file_size(0);
    EXPECT(rc == -1);
    EXPECTF(err.code == LB_ENOSPC, "code %d", err.code);
    EXPECTF(strstr(err.msg, "no space left") && strstr(err.msg, path), "%s", err.msg);
    size_t len = 0;
    char *back = lb_read_file(path, &len, &err);
    EXPECTF(back && len == strlen(old) && !memcmp(back, old, len), "the old file changed: %zu bytes", len);
    free(back);
    EXPECTF(count_entries(dir, ".tmp.") == 0 && count_entries(dir, NULL) == 1, "%d entries", count_entries(dir, NULL));
    // Without the limit the same write goes through whole.
    EXPECT(lb_write_file_atomic(path, big, big_n, &err) == 0 && file_size(path) == (long)big_n);
    free(big);
}

// Fills every A and B with values derived from seed, so two fills are told apart.
static void fill_adapter(lora_adapter_t *a, float seed) {
    for (size_t i = 0; i < a->n_params; i++) a->params[i] = seed + (float)(i % 97) * 1e-3f;
}

static void test_lora_save_on_full_disk(void) {
    char dir[128], path[192];
    snprintf(dir, sizeof dir, "%s/adapter", tmpdir);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    lora_config_t c;
    lora_config_default(&c);
    lora_adapter_t a, back;
    lb_err_t err = {0};
    EXPECT(lora_create(&a, &c, &flan_small, &err) == 0);
    fill_adapter(&a, 1.0f);
    // A first save into an empty folder that cannot hold the tensors (1.3 MB): the config
    // fits, the tensors do not, and no adapter_model.safetensors appears.
    limit_file_size(256 * 1024);
    int rc = lora_save(&a, dir, &err);
    limit_file_size(0);
    EXPECT(rc == -1);
    EXPECTF(err.code == LB_ENOSPC, "code %d", err.code);
    EXPECTF(strstr(err.msg, "no space left") && strstr(err.msg, path), "%s", err.msg);
    EXPECT(access(path, F_OK) != 0);
    EXPECT(count_entries(dir, ".tmp.") == 0);
    EXPECT(lora_load(&back, dir, &flan_small, &err) == -1 && strstr(err.msg, "adapter_model.safetensors"));
    // A complete adapter, then a second save that fails: the first one stays, whole.
    EXPECT(lora_save(&a, dir, &err) == 0);
    long size = file_size(path);
    fill_adapter(&a, 2.0f);
    limit_file_size(256 * 1024);
    rc = lora_save(&a, dir, &err);
    limit_file_size(0);
    EXPECT(rc == -1 && err.code == LB_ENOSPC);
    EXPECT(file_size(path) == size);
    EXPECT(count_entries(dir, ".tmp.") == 0 && count_entries(dir, NULL) == 2);
    if (lora_load(&back, dir, &flan_small, &err) == 0) {
        int same = back.n_params == a.n_params;
        for (size_t i = 0; same && i < back.n_params; i++) same = back.params[i] == 1.0f + (float)(i % 97) * 1e-3f;
        EXPECTF(same, "the adapter that was on disk before the failed save changed");
        lora_free(&back);
    } else {
        EXPECTF(0, "the earlier adapter no longer loads: %s", err.msg);
    }
    lora_free(&a);
}

// A store that hits the limit while writing metrics: the batch fails whole with "no space
// left" naming the database, and after the space comes back every earlier batch is there,
// the failed one is absent, and the file passes integrity_check.
static void test_store_on_full_disk(void) {
    char db[128];
    snprintf(db, sizeof db, "%s/lorabench.db", tmpdir);
    store_t *st;
    lb_err_t err = {0};
    if (store_open(db, &st, &err)) {
        EXPECTF(0, "%s", err.msg);
        return;
    }
    store_run_new_t r = {.name = "full-disk", .spec = "{}", .method = "lora", .r = 4, .alpha = 8,
                         .total_steps = -1, .sweep_id = -1};
    int64_t id;
    EXPECT(store_run_create(st, &r, &id, &err) == 0);
    enum { BATCH = 50 };
    store_metric_t rows[BATCH];
    char wal[160];
    snprintf(wal, sizeof wal, "%s-wal", db);
    long cur = file_size(db) > file_size(wal) ? file_size(db) : file_size(wal);
    limit_file_size((rlim_t)cur + 256 * 1024);  // room for some batches, not for 400
    int64_t committed = 0, step = 0;
    int failed = 0;
    for (int batch = 0; batch < 400 && !failed; batch++) {
        for (int i = 0; i < BATCH; i++) {
            step++;
            rows[i] = (store_metric_t){.step = step, .epoch = 0, .loss = 1.0 / (double)step, .lr = 1e-3,
                                       .grad_norm = 1, .tokens_per_s = 1, .step_ms = 1, .rss_mb = 1, .tokens = step,
                                       .wall_s = (double)step};
        }
        if (store_metrics_insert_batch(st, id, rows, BATCH, &err) == 0) committed += BATCH;
        else failed = 1;
    }
    EXPECTF(failed, "the limit was never reached (%lld rows)", (long long)committed);
    EXPECTF(err.code == LB_ENOSPC && strstr(err.msg, "no space left") && strstr(err.msg, db), "%s", err.msg);
    // The status update of a worker that stops here may fail too; it must not crash.
    store_run_set_status(st, id, STORE_STATUS_FAILED, err.msg, &err);
    store_close(st);
    limit_file_size(0);
    EXPECT(store_open(db, &st, &err) == 0);
    if (!st) return;
    int64_t n = -1;
    EXPECT(store_metrics_count(st, id, &n, &err) == 0);
    EXPECTF(n == committed && committed > 0, "%lld rows stored, %lld committed", (long long)n, (long long)committed);
    store_metric_t *got;
    size_t ng;
    if (store_metrics_since(st, id, -1, &got, &ng, &err) == 0) {
        int ok = ng == (size_t)committed;
        for (size_t i = 0; ok && i < ng; i++) ok = got[i].step == (int64_t)i + 1 && got[i].loss == 1.0 / (double)(i + 1);
        EXPECTF(ok, "the stored rows are not steps 1..%lld with their losses", (long long)committed);
        free(got);
    }
    // Space is back: the store takes writes again.
    rows[0].step = ++step;
    EXPECT(store_metrics_insert_batch(st, id, rows, 1, &err) == 0);
    store_close(st);
    sqlite3 *raw;
    char *res = NULL;
    if (sqlite3_open(db, &raw) == SQLITE_OK) {
        sqlite3_stmt *s;
        if (sqlite3_prepare_v2(raw, "PRAGMA integrity_check", -1, &s, NULL) == SQLITE_OK) {
            if (sqlite3_step(s) == SQLITE_ROW) res = xstrdup((const char *)sqlite3_column_text(s, 0));
            sqlite3_finalize(s);
        }
    }
    sqlite3_close(raw);
    EXPECTF(res && !strcmp(res, "ok"), "integrity_check: %s", res ? res : "(none)");
    free(res);
}

int main(void) {
    // Past the limit the kernel sends SIGXFSZ, which kills by default; ignored, write()
    // returns EFBIG, as the CLI commands arrange too.
    signal(SIGXFSZ, SIG_IGN);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lb-faults-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_atomic_write_keeps_old_file);
    RUN(test_lora_save_on_full_disk);
    RUN(test_store_on_full_disk);
    limit_file_size(0);
    nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    TH_DONE();
}
