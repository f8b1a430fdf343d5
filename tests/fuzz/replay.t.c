/* Replays the fuzz corpora through the fuzz targets' checks, without libFuzzer, so that
 * `make test` (gcc) and `make test-asan` keep every seed and every input that once found a
 * bug (the files named regress-*) as regression tests.
 *
 *   tests/fuzz/corpus/<target>/<file>  ──►  lpf_check_<target>(bytes)  ──►  ok
 *
 * The checks (tests/fuzz/check_*.c) are linked in from the lp_fuzz_checks library.
 * LPF_CORPUS overrides the corpus root, e.g. to replay what `make fuzz` collected in
 * build-fuzz/corpus. */
#include "fuzz/checks.h"

#include "tap.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const targets[] = {"request", "reply", "policy", "config", "lockreply"};

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Reads a whole file. Returns NULL (errno set) on failure. */
static uint8_t *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t cap = 0;
    *len = 0;
    if (f == NULL)
        return NULL;
    for (;;) {
        if (*len == cap) {
            cap = cap ? cap * 2 : 4096;
            uint8_t *nb = realloc(buf, cap);
            if (nb == NULL) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t n = fread(buf + *len, 1, cap - *len, f);
        *len += n;
        if (n == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* Replays every regular file of root/target in name order. Returns how many. */
static int replay_dir(const char *root, const char *target)
{
    char dir[4096];
    if (snprintf(dir, sizeof(dir), "%s/%s", root, target) >= (int)sizeof(dir)) {
        ok(0, "%s: corpus path too long", target);
        return 0;
    }
    lpf_check_fn check = lpf_check_by_name(target);
    DIR *dp = opendir(dir);
    if (dp == NULL) {
        ok(0, "%s: cannot open %s: %s", target, dir, strerror(errno));
        return 0;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(dp)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            names = realloc(names, cap * sizeof(*names));
            if (names == NULL)
                bail_out("out of memory");
        }
        names[n] = strdup(e->d_name);
        if (names[n] == NULL)
            bail_out("out of memory");
        n++;
    }
    closedir(dp);
    qsort(names, n, sizeof(*names), cmp_names);
    for (size_t i = 0; i < n; i++) {
        char path[8192];
        size_t len;
        uint8_t *data = NULL;
        if (snprintf(path, sizeof(path), "%s/%s", dir, names[i]) < (int)sizeof(path))
            data = read_all(path, &len);
        if (data == NULL) {
            ok(0, "%s/%s: cannot read: %s", target, names[i], strerror(errno));
        } else {
            lpf_msg[0] = '\0';
            int rc = check(data, len);
            if (!ok(rc == 0, "%s/%s (%zu bytes)", target, names[i], len))
                diag("%s", lpf_msg);
            free(data);
        }
        free(names[i]);
    }
    free(names);
    return (int)n;
}

int main(void)
{
    const char *root = getenv("LPF_CORPUS");
    char def[4096];
    if (root == NULL || root[0] == '\0') {
        snprintf(def, sizeof(def), "%s/tests/fuzz/corpus", LOCKPROXY_SRC);
        root = def;
    }
    plan_lazy();
    for (size_t i = 0; i < sizeof(targets) / sizeof(targets[0]); i++) {
        int n = replay_dir(root, targets[i]);
        ok(n > 0, "%s: %d corpus file(s) replayed", targets[i], n);
    }
    return 0;
}
