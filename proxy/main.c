/* lockproxy: the `report` subcommand (report.c), or the command line, --check (settings, the policy as understood, its warnings on
 * stderr), --version, --help; then the proxy (proxy.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "proxy/config.h"
#include "proxy/proxy.h"
#include "proxy/report.h"
#include "policy/policy.h"

int main(int argc, char **argv) {
    lp_config cfg;
    char err[600];
    if (argc > 1 && strcmp(argv[1], "report") == 0)
        return lp_report_main(argc - 1, argv + 1, stdout, stderr, (long long)lp_wall_ms());
    lp_config_defaults(&cfg);
    if (lp_config_from_args(&cfg, argc, argv, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        lp_config_free(&cfg);
        return 1;
    }
    int rc = 0;
    if (cfg.help) {
        fputs(lp_config_usage(), stdout);
    } else if (cfg.version) {
        printf("lockproxy %s\n", LOCKPROXY_VERSION);
    } else if (cfg.check) {
        lp_config_print(&cfg, stdout);
        if (cfg.policy_file) {
            policy *p = policy_load(cfg.policy_file, err, sizeof(err));
            if (p == NULL) {
                fprintf(stderr, "%s\n", err);
                rc = 1;
            } else {
                printf("policy %s: %zu rule(s)\n", cfg.policy_file, policy_count(p));
                policy_print(p, stdout);
                /* Warnings go to stderr and do not fail the check. */
                size_t n = policy_warnings(p, NULL, 0);
                char *w = n > 0 ? malloc(n + 1) : NULL;
                if (w != NULL) {
                    policy_warnings(p, w, n + 1);
                    fflush(stdout);
                    fputs(w, stderr);
                    free(w);
                }
                policy_free(p);
            }
        } else {
            printf("policy: none (pure pass-through)\n");
        }
        if (rc == 0) printf("configuration OK\n");
    } else {
        rc = proxy_run(&cfg);
    }
    lp_config_free(&cfg);
    return rc;
}
