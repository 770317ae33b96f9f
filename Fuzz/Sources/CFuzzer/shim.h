#ifndef WGKEEPER_CFUZZER_SHIM_H
#define WGKEEPER_CFUZZER_SHIM_H
/* libFuzzer's driver (compiler-rt FuzzerInterface.h), linked in by -sanitize=fuzzer. */
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
#endif
