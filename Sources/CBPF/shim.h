#ifndef WGKEEPER_CBPF_SHIM_H
#define WGKEEPER_CBPF_SHIM_H
#include <bpf/libbpf.h>
#include <bpf/bpf.h>
#include <linux/bpf.h>
#include <sys/mount.h>
#include <sys/statfs.h>
#include <sys/utsname.h>

// Debian 12's UAPI headers (6.1) and libbpf 1.1 predate TCX (Linux 6.6, libbpf 1.3): the
// numbers below are the kernel's stable ABI values from include/uapi/linux/bpf.h.
#define WGK_BPF_TCX_INGRESS 46      /* enum bpf_attach_type: BPF_TCX_INGRESS */
#define WGK_BPF_LINK_TYPE_TCX 11    /* enum bpf_link_type: BPF_LINK_TYPE_TCX */
#define WGK_BPF_FS_MAGIC 0xcafe4a11 /* linux/magic.h: BPF_FS_MAGIC */

/// The interface index of a TCX link: `tcx.ifindex`, the first word of the per-type union,
/// which the 6.1 header does not name. Zero once the device is gone or the link detached.
static inline __u32 wgk_link_info_tcx_ifindex(const struct bpf_link_info *info) {
    return *(const __u32 *)&info->raw_tracepoint;
}

/// The tc calls with their option structs built here: LIBBPF_OPTS zeroes the padding that
/// libbpf checks ("has non-zero extra bytes"), which a struct copied through Swift may not.
static inline int wgk_tc_ingress_create(int ifindex) {
    LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
    return bpf_tc_hook_create(&hook);
}

static inline int wgk_tc_ingress_query(int ifindex, __u32 handle, __u32 priority, __u32 *prog_id) {
    LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
    LIBBPF_OPTS(bpf_tc_opts, opts, .handle = handle, .priority = priority);
    int result = bpf_tc_query(&hook, &opts);
    if (result == 0) *prog_id = opts.prog_id;
    return result;
}

/// Creates or replaces (same handle and priority) a direct-action cls_bpf filter.
static inline int wgk_tc_ingress_replace(int ifindex, __u32 handle, __u32 priority, int prog_fd) {
    LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
    LIBBPF_OPTS(bpf_tc_opts, opts, .handle = handle, .priority = priority, .prog_fd = prog_fd,
                .flags = BPF_TC_F_REPLACE);
    return bpf_tc_attach(&hook, &opts);
}

static inline int wgk_tc_ingress_delete(int ifindex, __u32 handle, __u32 priority) {
    LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
    LIBBPF_OPTS(bpf_tc_opts, opts, .handle = handle, .priority = priority);
    return bpf_tc_detach(&hook, &opts);
}

/// Deletes the clsact qdisc of `ifindex`, and with it every filter on it.
static inline int wgk_tc_clsact_destroy(int ifindex) {
    LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS | BPF_TC_EGRESS);
    return bpf_tc_hook_destroy(&hook);
}

static inline long wgk_statfs_type(const char *path) {
    struct statfs buffer;
    if (statfs(path, &buffer) != 0) return -1;
    return (long)buffer.f_type;
}
/// BPF_MAP_UPDATE_BATCH of `*count` keys and values (BPF_ANY each); on return `*count` is how
/// many were written. LPM tries take it from Linux 5.? on (generic_map_update_batch); older
/// kernels answer ENOTSUPP (524) or EINVAL, and the caller writes one entry at a time.
static inline int wgk_map_update_batch(int fd, const void *keys, const void *values, __u32 *count) {
    LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = BPF_ANY);
    return bpf_map_update_batch(fd, keys, values, count, &opts);
}

/// BPF_MAP_LOOKUP_BATCH: up to `*count` keys and values from where `in_batch` left off (NULL:
/// the start); `out_batch` receives where to go on; `*count` how many came back. -ENOENT once
/// the map is exhausted (the last entries may come with it).
static inline int wgk_map_lookup_batch(int fd, void *in_batch, void *out_batch, void *keys, void *values, __u32 *count) {
    LIBBPF_OPTS(bpf_map_batch_opts, opts);
    return bpf_map_lookup_batch(fd, in_batch, out_batch, keys, values, count, &opts);
}

#endif
