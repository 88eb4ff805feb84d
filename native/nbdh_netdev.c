/*
 * nbdh_netdev: the two socket options Node's dgram lacks, for a DHCP server on a multi-homed host.
 *
 *   openUdpSocket(ifname, port) -> fd   a UDP socket with SO_REUSEADDR, SO_BROADCAST and
 *                                       SO_BINDTODEVICE(ifname) set *before* bind(0.0.0.0:port), so no
 *                                       packet from another interface can ever be queued on it.
 *                                       Hand the fd to dgram's socket.bind({ fd }).
 *   bindToDevice(fd, ifname)            SO_BINDTODEVICE on an existing socket ("" unbinds).
 *
 * Errors throw a JS Error whose message names the call and strerror(errno), with .code = "E..." name.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <node_api.h>
#include "nbdh_errno.h"
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <net/if.h>

static int get_string(napi_env env, napi_value v, char *buf, size_t len) {
  size_t got = 0;
  if (napi_get_value_string_utf8(env, v, buf, len, &got) != napi_ok) return -1;
  if (got >= len - 1) return -1;
  return 0;
}

static napi_value bind_to_device(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd = -1;
  char ifname[IF_NAMESIZE + 1] = {0};
  if (argc < 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || get_string(env, argv[1], ifname, sizeof ifname) != 0) {
    napi_throw_type_error(env, NULL, "bindToDevice(fd: number, ifname: string)");
    return NULL;
  }
  if (setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, ifname, (socklen_t)strlen(ifname)) != 0)
    return throw_errno(env, "setsockopt(SO_BINDTODEVICE)", errno);
  return NULL;
}

static napi_value open_udp_socket(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char ifname[IF_NAMESIZE + 1] = {0};
  int32_t port = 0;
  if (argc < 2 || get_string(env, argv[0], ifname, sizeof ifname) != 0 || napi_get_value_int32(env, argv[1], &port) != napi_ok ||
      port < 0 || port > 65535) {
    napi_throw_type_error(env, NULL, "openUdpSocket(ifname: string, port: number)");
    return NULL;
  }
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  int one = 1;
  const char *step = NULL;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) step = "setsockopt(SO_REUSEADDR)";
  else if (setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof one) != 0) step = "setsockopt(SO_BROADCAST)";
  else if (setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, ifname, (socklen_t)strlen(ifname)) != 0)
    step = "setsockopt(SO_BINDTODEVICE)";
  else {
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) step = "bind";
  }
  if (step) {
    int err = errno;
    close(fd);
    return throw_errno(env, step, err);
  }
  napi_value result;
  napi_create_int32(env, fd, &result);
  return result;
}

static napi_value close_fd(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd = -1;
  if (argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok) {
    napi_throw_type_error(env, NULL, "closeFd(fd: number)");
    return NULL;
  }
  close(fd);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"bindToDevice", NULL, bind_to_device, NULL, NULL, NULL, napi_default, NULL},
      {"openUdpSocket", NULL, open_udp_socket, NULL, NULL, NULL, napi_default, NULL},
      {"closeFd", NULL, close_fd, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
