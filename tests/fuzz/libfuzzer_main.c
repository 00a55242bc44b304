/* libFuzzer entry point for one target of tests/support/dsq_fuzz.c, chosen at build time with
 * -DDSQ_FUZZ_FN=dsq_fuzz_<target> (see `make fuzz`). */
#include "dsq_fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return DSQ_FUZZ_FN(data, size); }
