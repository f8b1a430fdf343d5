/* lockproxy: the `report` subcommand (report.c); otherwise the command line, then --check
 * (check.c), --version, --help, or the proxy (proxy.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "proxy/config.h"
#include "proxy/proxy.h"
#include "proxy/report.h"
#include "proxy/check.h"

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
        rc = lp_check_run(&cfg, stdout, stderr);
    } else {
        rc = proxy_run(&cfg);
    }
    lp_config_free(&cfg);
    return rc;
}
