#include "cli_common.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int cli_open_store(const char *ws, char **ws_out, store_t **st) {
    lb_err_t err = {0};
    char *dir = NULL;
    if (store_workspace_resolve(ws, &dir, &err)) {
        fprintf(stderr, "lorabench: %s\n", err.msg);
        return -1;
    }
    char *db = store_workspace_db_path(dir);
    int rc = store_open(db, st, &err);
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
            if (*p < 0x20) fprintf(f, "\\u%04x", *p);
            else fputc(*p, f);
        }
    }
    fputc('"', f);
}

int cli_is_help(const char *arg) { return arg && (!strcmp(arg, "--help") || !strcmp(arg, "-h")); }

const char *cli_self_exe(void) {
    // /proc/self/exe starts this process's own program even when its file was removed or
    // replaced (a rebuild while a sweep runs), so workers speak the driver's protocol.
    // Always this path, never the file's name read from it: the file can go between that
    // reading and the spawn.
    if (access("/proc/self/exe", X_OK) == 0) return "/proc/self/exe";
    return "lorabench";
}
