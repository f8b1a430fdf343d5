/* lockproxy --check: what start-up would find wrong, without starting. */
#ifndef LP_CHECK_H
#define LP_CHECK_H

#include <stdio.h>
#include "proxy/config.h"

/* Prints the settings and the policy as understood on out, then checks what start-up needs
 * from the outside: the policy file parses, the audit log (when a policy uses it) opens for
 * append (created and removed again when it did not exist; never truncated), the upstream
 * name (with sentinel://, each sentinel's) resolves. Errors and warnings go to err, each
 * naming its directive (with FILE:LINE when the config file set it). A Redis that does not
 * answer PING is a warning only. Ends with "configuration OK" on out. Returns the exit
 * status, 0 or 1. */
int lp_check_run(const lp_config *cfg, FILE *out, FILE *err);

#endif
