/* The libFuzzer entry point of one fuzz target: LPF_CHECK names its check function, one of
 * those of checks.h (CMake builds fuzz_request, fuzz_reply, fuzz_policy and fuzz_config from this
 * file with -fsanitize=fuzzer,address,undefined). A failed property aborts, which libFuzzer
 * reports as a crash and saves the input. */
#include "checks.h"

#include <stdio.h>
#include <stdlib.h>

#ifndef LPF_CHECK
#error "LPF_CHECK must name a check function"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (LPF_CHECK(data, size) != 0) {
        fprintf(stderr, "lockproxy fuzz check failed: %s\n", lpf_msg);
        abort();
    }
    return 0;
}
