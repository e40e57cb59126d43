#include "cli_common.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "unicode_norm.h"
#include "util.h"

// read_only: 0 the full open (WAL, migrations); 1 read-only when this user cannot write the
// database or its folder (reads still work in a workspace of another user), else full.
static int open_store(const char *ws, int create, int read_only, char **ws_out, store_t **st) {
    lb_err_t err = {0};
    char *dir = NULL;
    if (create ? store_workspace_resolve(ws, &dir, &err) : store_workspace_find(ws, &dir, &err)) {
        fprintf(stderr, "lorabench: %s\n", err.msg);
        return -1;
    }
    char *db = store_workspace_db_path(dir);
    if (read_only) read_only = !(access(db, W_OK) == 0 && access(dir, W_OK) == 0);
    int rc = read_only ? store_open_readonly(db, st, &err) : store_open(db, st, &err);
    free(db);
    if (rc) {
        fprintf(stderr, "lorabench: %s\n", err.msg);
        free(dir);
        return -1;
    }
    if (ws_out) *ws_out = dir;
    else free(dir);
    return 0;
}

int cli_open_store(const char *ws, char **ws_out, store_t **st) { return open_store(ws, 0, 0, ws_out, st); }

int cli_open_store_read(const char *ws, char **ws_out, store_t **st) { return open_store(ws, 0, 1, ws_out, st); }

int cli_create_store(const char *ws, char **ws_out, store_t **st) { return open_store(ws, 1, 0, ws_out, st); }

int cli_parse_id(const char *arg, int64_t *id) {
    char *end;
    errno = 0;
    long long v = arg ? strtoll(arg, &end, 10) : 0;
    if (!arg || errno || *end || v <= 0) {
        fprintf(stderr, "lorabench: '%s' is not a run id; 'lorabench runs' lists them\n", arg ? arg : "");
        return -1;
    }
    *id = v;
    return 0;
}

int cli_parse_ids(const char *arg, int64_t *ids, int *n, int max) {
    for (const char *p = arg; *p;) {
        size_t l = strcspn(p, ",");
        char part[64];
        snprintf(part, sizeof part, "%.*s", (int)(l < 63 ? l : 63), p);
        char *dash = strchr(part + 1, '-');
        int64_t a, b;
        if (dash) *dash = 0;
        if (cli_parse_id(part, &a) || (dash && cli_parse_id(dash + 1, &b))) return -1;
        if (!dash) b = a;
        if (b < a || b - a > 100000) {
            fprintf(stderr, "lorabench: '%.*s' is not a range of run ids; write it low-high, e.g. 4-9\n", (int)l, p);
            return -1;
        }
        for (int64_t id = a; id <= b; id++) {
            if (*n >= max) {
                fprintf(stderr, "lorabench: at most %d run ids at once\n", max);
                return -1;
            }
            ids[(*n)++] = id;
        }
        p += l + (p[l] == ',');
    }
    return 0;
}

void cli_json_string(FILE *f, const char *s) {
    if (!s) {
        fputs("null", f);
        return;
    }
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (*p < 0x20) {
                fprintf(f, "\\u%04x", *p);
            } else if (*p < 0x80) {
                fputc(*p, f);
            } else {  // a valid UTF-8 sequence as it is, an invalid byte as U+FFFD
                size_t len;
                uint32_t cp = lb_utf8_decode((const char *)p, strnlen((const char *)p, 4), &len);
                if (cp == 0xFFFD && len == 1) fputs("\\ufffd", f);
                else fwrite(p, 1, len, f);
                p += len - 1;
            }
        }
    }
    fputc('"', f);
}

int cli_is_help(const char *arg) { return arg && (!strcmp(arg, "--help") || !strcmp(arg, "-h")); }

int cli_exit_stopped(int sig) { return 128 + sig; }

int cli_exit_was_stopped(int code) { return code == cli_exit_stopped(SIGINT) || code == cli_exit_stopped(SIGTERM); }

const char *cli_self_exe(void) {
    // /proc/self/exe starts this process's own program even when its file was removed or
    // replaced (a rebuild while a sweep runs), so workers speak the driver's protocol.
    // Always this path, never the file's name read from it: the file can go between that
    // reading and the spawn.
    if (access("/proc/self/exe", X_OK) == 0) return "/proc/self/exe";
    return "lorabench";
}

char *cli_tokenizer_file(const char *path) {
    struct stat sb;
    size_t n = strlen(path) + 32;
    char *out = xmalloc(n);
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) snprintf(out, n, "%s/tokenizer.json", path);
    else snprintf(out, n, "%s", path);
    return out;
}

void cli_cell(FILE *f, const char *s, int width, int right) {
    if (!s) s = "";
    int pad = width - store_text_cols(s);
    if (right)
        for (int i = 0; i < pad; i++) fputc(' ', f);
    fputs(s, f);
    if (!right)
        for (int i = 0; i < pad; i++) fputc(' ', f);
}

int cli_spec_load(const char *path, int delete_spec, spec_t *spec) {
    lb_err_t err = {0};
    int rc = spec_load_file(path, spec, &err);
    if (delete_spec) unlink(path);
    if (rc) fprintf(stderr, "lorabench: %s\n", err.msg);
    return rc ? -1 : 0;
}

int cli_spec_load_grid(const char *path, int delete_spec, spec_t *spec, spec_t **specs, size_t *n) {
    if (cli_spec_load(path, delete_spec, spec)) return -1;
    lb_err_t err = {0};
    if (spec_expand_grid(spec, specs, n, &err) == 0) return 0;
    fprintf(stderr, "lorabench: %s\n", err.msg);
    spec_free(spec);
    return -1;
}
