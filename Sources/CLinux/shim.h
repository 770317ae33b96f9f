#ifndef WGKEEPER_CLINUX_SHIM_H
#define WGKEEPER_CLINUX_SHIM_H
/* Linux interfaces Glibc's Swift module does not expose: epoll, and the GNU calls below. */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdint.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/vfs.h>

/* The file system type (statfs's f_type) of the one holding `path`, or -1. */
static inline int64_t wgk_filesystem_type(const char *path) {
    struct statfs info;
    if (statfs(path, &info) != 0) return -1;
    return (int64_t)info.f_type;
}

/* Declared by glibc only under _GNU_SOURCE; declared here rather than change feature macros. */
extern int accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags);
extern int pipe2(int fds[2], int flags);

/* struct ucred is _GNU_SOURCE-only too: the same layout, read through SO_PEERCRED. */
static inline int wgk_peer_credentials(int fd, int32_t *pid, uint32_t *uid, uint32_t *gid) {
    struct { int32_t pid; uint32_t uid; uint32_t gid; } cred;
    socklen_t length = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, 17 /* SO_PEERCRED */, &cred, &length) != 0) return -1;
    *pid = cred.pid;
    *uid = cred.uid;
    *gid = cred.gid;
    return 0;
}

/* The peer's supplementary groups at connect() (SO_PEERGROUPS, Linux 4.13): the groups the
 * process really had, with no NSS lookup. Returns how many were stored, or -1. */
static inline int wgk_peer_groups(int fd, uint32_t *groups, int capacity) {
    socklen_t length = (socklen_t)(capacity * sizeof(uint32_t));
    if (getsockopt(fd, SOL_SOCKET, 59 /* SO_PEERGROUPS */, groups, &length) != 0) return -1;
    return (int)(length / sizeof(uint32_t));
}

/* The file now at `path`, never through a symbolic link, as an O_PATH descriptor (O_PATH is
 * _GNU_SOURCE-only): it names that inode, whatever the path holds afterwards. */
static inline int wgk_open_path_nofollow(const char *path) {
    return open(path, 010000000 /* O_PATH */ | O_NOFOLLOW | O_CLOEXEC);
}

/* Changes the owner of the file an O_PATH descriptor names (AT_EMPTY_PATH: no path walked). */
static inline int wgk_chown_descriptor(int fd, uint32_t uid, uint32_t gid) {
    return fchownat(fd, "", uid, gid, 0x1000 /* AT_EMPTY_PATH */);
}
#endif
