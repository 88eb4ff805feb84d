/* Shared by the addons: throw a JS Error for a failed system call, "<what>: <strerror>", with .code "E..." */
#ifndef NBDH_ERRNO_H
#define NBDH_ERRNO_H
#include <errno.h>
#include <node_api.h>
#include <stdio.h>
#include <string.h>

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  const char *name = NULL;
  switch (err) {
    case EPERM: name = "EPERM"; break;
    case ENODEV: name = "ENODEV"; break;
    case EADDRINUSE: name = "EADDRINUSE"; break;
    case EADDRNOTAVAIL: name = "EADDRNOTAVAIL"; break;
    case EACCES: name = "EACCES"; break;
    case EBADF: name = "EBADF"; break;
    case EINVAL: name = "EINVAL"; break;
    default: break;
  }
  char code[32];
  if (name != NULL) snprintf(code, sizeof code, "%s", name);
  else snprintf(code, sizeof code, "ERRNO_%d", err);
  napi_throw_error(env, code, msg);
  return NULL;
}

#endif
