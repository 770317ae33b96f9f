#ifndef WGKEEPER_CSYSTEMD_SHIM_H
#define WGKEEPER_CSYSTEMD_SHIM_H
#include <systemd/sd-daemon.h>
#endif
