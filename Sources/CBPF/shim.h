#ifndef WGKEEPER_CBPF_SHIM_H
#define WGKEEPER_CBPF_SHIM_H
#include <bpf/libbpf.h>
#include <bpf/bpf.h>
#endif
