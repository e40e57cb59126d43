// libFuzzer target: experiment spec JSON (spec_parse), the canonical writer's round trip
// (spec_to_json of a parsed spec parses back to the same canonical text) and grid
// expansion (every point is a valid spec without a grid).
#include <string.h>

#include <cJSON.h>

#include "fuzz_check.h"
#include "spec.h"

// Grid points of a grid object: the product of its value-list sizes (stops counting past
// 64). Expansion allows 10000, but that many full specs per input would make units slow.
static size_t grid_points(const char *grid_json) {
    cJSON *g = cJSON_Parse(grid_json);
    size_t total = 1;
    for (const cJSON *e = g ? g->child : NULL; e && total <= 64; e = e->next)
        total *= (size_t)(cJSON_GetArraySize(e) > 0 ? cJSON_GetArraySize(e) : 1);
    cJSON_Delete(g);
    return total;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *json = malloc(size + 1);
    memcpy(json, data, size);
    json[size] = '\0';
    spec_t s;
    lb_err_t err = {0};
    if (spec_parse(json, (size & 1) ? "spec.json" : NULL, &s, &err) != 0) {
        FUZZ_CHECK(err.msg[0] != '\0');  // a refusal always says why
        free(json);
        return 0;
    }
    FUZZ_CHECK(spec_problems(&s, NULL, 0) == 0);  // parse promised a valid spec
    // Round trip: canonical text -> spec -> the same canonical text.
    char *one = spec_to_json(&s, (int)(size & 2));
    spec_t back;
    lb_err_t err2 = {0};
    int rc = spec_parse(one, "canonical", &back, &err2);
    FUZZ_CHECK(rc == 0);
    if (rc == 0) {
        char *two = spec_to_json(&back, (int)(size & 2));
        FUZZ_CHECK(strcmp(one, two) == 0);
        free(two);
        spec_free(&back);
    }
    free(one);
    spec_t copy;
    spec_copy(&copy, &s);
    spec_free(&copy);
    if (!s.grid_json || grid_points(s.grid_json) <= 64) {
        spec_t *pts = NULL;
        size_t n = 0;
        if (spec_expand_grid(&s, &pts, &n, &err) == 0) {
            FUZZ_CHECK(n >= 1);
            for (size_t i = 0; i < n; i++) {
                FUZZ_CHECK(pts[i].grid_json == NULL && spec_problems(&pts[i], NULL, 0) == 0);
                free(spec_to_json(&pts[i], 0));
            }
            spec_list_free(pts, n);
        } else {
            FUZZ_CHECK(err.msg[0] != '\0');
        }
    }
    spec_free(&s);
    free(json);
    return 0;
}
