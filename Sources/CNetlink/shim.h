#ifndef WGKEEPER_CNETLINK_SHIM_H
#define WGKEEPER_CNETLINK_SHIM_H

/* glibc first, so the UAPI headers below skip what glibc already defines. */
#include <sys/socket.h>
#include <netinet/in.h>
#include <net/if.h>
#include <sys/random.h> /* getrandom(2), for PrivateKey.generate() */

#include <libmnl/libmnl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/if_link.h>
#include <linux/if_addr.h>
#include <linux/neighbour.h>
#include <linux/netconf.h>
#include <linux/genetlink.h>
#include <linux/wireguard.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nf_tables.h>

/* setns(2) is only declared under _GNU_SOURCE; declare it here rather than change feature macros. */
extern int setns(int fd, int nstype);
static inline int cnl_enter_netns(int fd) { return setns(fd, 0x40000000 /* CLONE_NEWNET */); }

/* Function-like macros Swift cannot import. */
static inline unsigned int cnl_nlmsg_align(unsigned int len) { return NLMSG_ALIGN(len); }
static inline unsigned int cnl_nla_align(unsigned int len) { return NLA_ALIGN(len); }
static inline unsigned int cnl_nlmsg_hdrlen(void) { return NLMSG_HDRLEN; }
static inline unsigned short cnl_nla_type_mask(void) { return NLA_TYPE_MASK; }
static inline unsigned int cnl_rtnlgrp_bit(unsigned int group) { return group ? 1u << (group - 1) : 0; }

/* Sizes of the family headers, for decoders that check them before reading. */
static inline unsigned int cnl_sizeof_rtmsg(void) { return sizeof(struct rtmsg); }
static inline unsigned int cnl_sizeof_ndmsg(void) { return sizeof(struct ndmsg); }
static inline unsigned int cnl_sizeof_ifinfomsg(void) { return sizeof(struct ifinfomsg); }
static inline unsigned int cnl_sizeof_ifaddrmsg(void) { return sizeof(struct ifaddrmsg); }
static inline unsigned int cnl_sizeof_netconfmsg(void) { return sizeof(struct netconfmsg); }
static inline unsigned int cnl_sizeof_genlmsghdr(void) { return sizeof(struct genlmsghdr); }
static inline unsigned int cnl_sizeof_nlmsgerr(void) { return sizeof(struct nlmsgerr); }
static inline unsigned int cnl_sizeof_nfgenmsg(void) { return sizeof(struct nfgenmsg); }

#endif
