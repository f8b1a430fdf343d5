/* The checks by name, and the message of the last failure (see checks.h). The checks
 * themselves are in check_request.c, check_reply.c, check_policy.c and check_config.c. */
#include "checks.h"

#include <string.h>

char lpf_msg[1024];

lpf_check_fn lpf_check_by_name(const char *name)
{
    if (strcmp(name, "request") == 0)
        return lpf_check_request;
    if (strcmp(name, "reply") == 0)
        return lpf_check_reply;
    if (strcmp(name, "policy") == 0)
        return lpf_check_policy;
    if (strcmp(name, "config") == 0)
        return lpf_check_config;
    if (strcmp(name, "lockreply") == 0)
        return lpf_check_lockreply;
    return NULL;
}
