#ifndef WGKEEPER_CLINUX_SHIM_H
#define WGKEEPER_CLINUX_SHIM_H
/* Linux interfaces Glibc's Swift module does not expose: epoll, and the GNU calls below. */
#include <errno.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>

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
#endif
