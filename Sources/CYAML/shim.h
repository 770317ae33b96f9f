#ifndef WGKEEPER_CYAML_SHIM_H
#define WGKEEPER_CYAML_SHIM_H
#include <yaml.h>
#endif
