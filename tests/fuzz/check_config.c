/* The config check (lpf_check_config, see checks.h). */
#define _GNU_SOURCE
#include "check_util.h"

#include "proxy/addr.h"
#include "proxy/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int addr_roundtrip(const char *what, const lp_addr *a)
{
    char text[512], err[512];
    lp_addr b;
    lp_addr_format(a, text, sizeof(text));
    if (lp_addr_parse(text, &b, err, sizeof(err)) < 0)
        return fail("config: %s formats as '%s', which does not parse: %s", what, text, err);
    if (a->is_unix != b.is_unix || strcmp(a->host, b.host) != 0 || a->port != b.port ||
        strcmp(a->path, b.path) != 0)
        return fail("config: %s formats as '%s', which parses to another address", what, text);
    return 0;
}

/* A sentinel:// upstream (then c.upstream is unused) formats to what parses back the same. */
static int sentinel_roundtrip(const lp_sentinel_cfg *a)
{
    char text[LP_SENTINELS_MAX * 300 + 256], err[512];
    lp_sentinel_cfg b;
    lp_sentinel_format(a, text, sizeof(text));
    if (lp_sentinel_parse(text, &b, err, sizeof(err)) < 0)
        return fail("config: upstream formats as '%s', which does not parse: %s", text, err);
    int same = a->n == b.n && strcmp(a->master, b.master) == 0;
    for (int i = 0; same && i < a->n; i++)
        same = strcmp(a->addr[i].host, b.addr[i].host) == 0 && a->addr[i].port == b.addr[i].port;
    if (!same)
        return fail("config: upstream formats as '%s', which parses to other sentinels", text);
    return 0;
}

/* lp_config_print() into a malloc'd string. */
static char *print_config(const lp_config *c, size_t *len)
{
    char *text = NULL;
    FILE *f = open_memstream(&text, len);
    if (f == NULL)
        abort();
    lp_config_print(c, f);
    if (fclose(f) != 0)
        abort();
    return text;
}

int lpf_check_config(const uint8_t *data, size_t size)
{
    static int fd = -1;
    char path[64], err[1024] = "";
    int rc = 0;

    if (fd < 0) {
        fd = memfd_create("lpf-config", MFD_CLOEXEC);
        if (fd < 0)
            abort();
    }
    if (ftruncate(fd, 0) != 0 || (size > 0 && pwrite(fd, data, size, 0) != (ssize_t)size))
        abort();
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);

    lp_config c;
    lp_config_defaults(&c);
    if (lp_config_load_file(&c, path, err, sizeof(err)) < 0) {
        rc = check_where("config", err, path, count_lines(data, size));
    } else {
        if (c.maxclients < 1 || c.proto_max_bulk_len < (1LL << 20) ||
            c.client_query_buffer_limit < (1LL << 20) || c.low_water < 1 ||
            c.low_water >= c.high_water || c.hard_limit <= c.high_water ||
            c.connect_timeout_ms < 1 || c.shutdown_timeout_ms < 1 || c.upstream_timeout_ms < 0)
            rc = fail("config: loaded values out of their bounds");
        if (c.policy_file != NULL && c.policy_file[0] == '\0')
            rc = fail("config: empty policy file name");
        size_t nl = strnlen(c.instance_name, sizeof(c.instance_name));
        if (rc == 0 && (nl == 0 || nl == sizeof(c.instance_name)))
            rc = fail("config: instance-name of %zu bytes", nl);
        size_t ul = strnlen(c.upstream_user, sizeof(c.upstream_user));
        size_t pl = strnlen(c.upstream_password, sizeof(c.upstream_password));
        if (rc == 0 && (ul == sizeof(c.upstream_user) || pl == sizeof(c.upstream_password)))
            rc = fail("config: upstream-auth not NUL-terminated");
        if (rc == 0 && c.upstream_password[0] == '\0' && c.upstream_user[0] != '\0')
            rc = fail("config: upstream-auth user without a password");
        if (rc == 0 && c.upstream_password[0] != '\0') {
            /* --check never shows the password: it prints the same with another one. */
            size_t len1 = 0, len2 = 0;
            char *shown1 = print_config(&c, &len1);
            char saved[sizeof(c.upstream_password)];
            memcpy(saved, c.upstream_password, sizeof(saved));
            strcpy(c.upstream_password, saved[0] == 'x' ? "y" : "x");
            char *shown2 = print_config(&c, &len2);
            memcpy(c.upstream_password, saved, sizeof(saved));
            if (len1 != len2 || memcmp(shown1, shown2, len1) != 0)
                rc = fail("config: lp_config_print() shows the upstream password");
            free(shown1);
            free(shown2);
        }
        if (rc == 0)
            rc = addr_roundtrip("listen", &c.listen);
        if (rc == 0 && c.sentinel.n > 0)
            rc = sentinel_roundtrip(&c.sentinel);
        else if (rc == 0)
            rc = addr_roundtrip("upstream", &c.upstream);
    }
    lp_config_free(&c);
    lp_config_free(&c);   /* documented as safe twice */

    /* The unit parsers on the input's first line, as a string. */
    char word[80];
    size_t k = 0;
    while (k < size && k < sizeof(word) - 1 && data[k] != '\n' && data[k] != '\0') {
        word[k] = (char)data[k];
        k++;
    }
    word[k] = '\0';
    long long m = lp_parse_memory(word), t = lp_parse_duration_ms(word);
    if (rc == 0 && (m < -1 || t < -1))
        rc = fail("config: unit parser returned %lld / %lld", m, t);
    lp_addr a;
    if (rc == 0 && lp_addr_parse(word, &a, err, sizeof(err)) == 0)
        rc = addr_roundtrip("an address", &a);
    return rc;
}
