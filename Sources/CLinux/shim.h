#ifndef WGKEEPER_CLINUX_SHIM_H
#define WGKEEPER_CLINUX_SHIM_H
/* Linux interfaces Glibc's Swift module does not expose: epoll, and the GNU calls below. */
#include <sys/epoll.h>
#include <sys/socket.h>

/* Declared by glibc only under _GNU_SOURCE; declared here rather than change feature macros. */
extern int accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags);
extern int pipe2(int fds[2], int flags);
#endif
