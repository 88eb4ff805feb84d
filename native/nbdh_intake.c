/*
 * nbdh_intake: the DHCP server's receive side, on its own thread, with the per-MAC admission in front.
 *
 * Why: in a boot storm the event loop is busy with hundreds of TFTP transfers, and libuv reads a UDP
 * socket only when the loop comes round to it. A DHCP flood (a looping client, a misconfigured relay)
 * then fills the socket's receive buffer, which rmem_max bounds to a fraction of a second of flood,
 * and the kernel drops the booting machines' DISCOVERs with the flood's: fairness is gone before any
 * code of ours sees a packet (bench:storm measured 1.08 million receive-buffer drops in a 252 s storm
 * with a 10,000/s flood, and machines that never got a lease). Here a thread drains the socket with
 * recvmmsg as fast as the kernel fills it, drops what is over each MAC's rate, and hands only the rest
 * to JavaScript, in batches, through a thread-safe function.
 *
 *   new DhcpIntake(fd, onPacket)       takes the socket (from nbdh_netdev openUdpSocket) and starts
 *                                      reading; onPacket(buffer, address, port) on the JS thread
 *   .setGuard(perMacPerSecond, burst)  the admission's rate (0 turns it off) and burst
 *   .send(buffer, address, port)       one sendto(2), never blocks: 0 or -errno
 *   .summary()                         what the guard dropped since the last call, or undefined:
 *                                      { dropped, macs, top: { mac, dropped } }
 *   .stats()                           { received, admitted, queueDropped, truncated } since start
 *   .close()                           stops the thread and closes the socket (idempotent)
 *
 *   new MacGuard(perMacPerSecond, burst, maxTracked)  the same admission as a pure object on a clock the
 *   .admit(buffer, nowMs) / .summary()                caller gives: the policy's tests use it
 *
 * The admission is a token bucket per client hardware address (chaddr, bytes 28..33 of the BOOTP
 * message): a booting machine sends a handful of requests (firmware retries DISCOVER at 4, 8, 16 s; a
 * loader sends its own DORA), so a few per second with a burst is far above any real client. A
 * datagram too short to carry a chaddr is admitted (the decoder rejects it and logs it). At maxTracked
 * MACs the table starts over, so a flood of fresh MACs only costs bounded memory.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <node_api.h>
#include "nbdh_errno.h"
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHADDR_OFFSET 28
#define MAC_BYTES 6
/* Datagrams read per recvmmsg. */
#define RECV_BATCH 64
/* A DHCP message larger than this is truncated by the kernel and dropped (RFC 2131 needs 576). */
#define RECV_MAX 4096
/* Admitted datagrams waiting for the JS thread; past this they are dropped and counted. */
#define QUEUE_MAX 8192
/* The receive buffer asked for: room for a stall of the reader thread, which should never be long. */
#define RCVBUF_BYTES (8 * 1024 * 1024)
#define DEFAULT_MAX_TRACKED 65536

/* ---- the admission: a token bucket per MAC, open addressing ---- */

typedef struct {
  uint8_t mac[MAC_BYTES];
  uint8_t used;
  uint32_t dropped;
  double tokens;
  double at;
} bucket_t;

typedef struct {
  double rate, burst;
  uint32_t max_tracked, cap, tracked;
  bucket_t *slots;
  uint64_t dropped;
} guard_t;

static int guard_init(guard_t *g, double rate, double burst, uint32_t max_tracked) {
  uint32_t cap = 16;
  while (cap < 2 * max_tracked) cap <<= 1;
  g->slots = calloc(cap, sizeof *g->slots);
  if (g->slots == NULL) return -1;
  g->rate = rate;
  g->burst = burst;
  g->max_tracked = max_tracked;
  g->cap = cap;
  g->tracked = 0;
  g->dropped = 0;
  return 0;
}

static uint32_t mac_hash(const uint8_t *mac) {
  uint32_t h = 2166136261u; /* FNV-1a */
  for (int i = 0; i < MAC_BYTES; i++) h = (h ^ mac[i]) * 16777619u;
  return h;
}

static bucket_t *guard_slot(guard_t *g, const uint8_t *mac) {
  uint32_t i = mac_hash(mac) & (g->cap - 1);
  while (g->slots[i].used && memcmp(g->slots[i].mac, mac, MAC_BYTES) != 0) i = (i + 1) & (g->cap - 1);
  return &g->slots[i];
}

/* 1 if the datagram may be handled. */
static int guard_admit(guard_t *g, const uint8_t *msg, size_t len, double now) {
  if (g->rate <= 0 || len < CHADDR_OFFSET + MAC_BYTES) return 1;
  const uint8_t *mac = msg + CHADDR_OFFSET;
  bucket_t *b = guard_slot(g, mac);
  if (!b->used) {
    if (g->tracked >= g->max_tracked) {
      memset(g->slots, 0, (size_t)g->cap * sizeof *g->slots);
      g->tracked = 0;
      b = guard_slot(g, mac);
    }
    b->used = 1;
    memcpy(b->mac, mac, MAC_BYTES);
    b->tokens = g->burst;
    b->at = now;
    g->tracked++;
  } else {
    double tokens = b->tokens + ((now - b->at) / 1000.0) * g->rate;
    b->tokens = tokens < g->burst ? tokens : g->burst;
    b->at = now;
  }
  if (b->tokens >= 1) {
    b->tokens -= 1;
    return 1;
  }
  g->dropped++;
  b->dropped++;
  return 0;
}

/* { dropped, macs, top } since the last call, or undefined; then counts start over. */
static napi_value guard_summary(napi_env env, guard_t *g) {
  napi_value result;
  if (g->dropped == 0) {
    napi_get_undefined(env, &result);
    return result;
  }
  uint32_t macs = 0;
  bucket_t *top = NULL;
  for (uint32_t i = 0; i < g->cap; i++) {
    bucket_t *b = &g->slots[i];
    if (!b->used || b->dropped == 0) continue;
    macs++;
    if (top == NULL || b->dropped > top->dropped) top = b;
  }
  napi_value v, t;
  napi_create_object(env, &result);
  napi_create_double(env, (double)g->dropped, &v);
  napi_set_named_property(env, result, "dropped", v);
  napi_create_uint32(env, macs, &v);
  napi_set_named_property(env, result, "macs", v);
  if (top != NULL) {
    char mac[18];
    snprintf(mac, sizeof mac, "%02x:%02x:%02x:%02x:%02x:%02x", top->mac[0], top->mac[1], top->mac[2], top->mac[3],
             top->mac[4], top->mac[5]);
    napi_create_object(env, &t);
    napi_create_string_utf8(env, mac, NAPI_AUTO_LENGTH, &v);
    napi_set_named_property(env, t, "mac", v);
    napi_create_uint32(env, top->dropped, &v);
    napi_set_named_property(env, t, "dropped", v);
  } else {
    napi_get_undefined(env, &t); /* the table started over since the drops */
  }
  napi_set_named_property(env, result, "top", t);
  for (uint32_t i = 0; i < g->cap; i++) g->slots[i].dropped = 0;
  g->dropped = 0;
  return result;
}

static double monotonic_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* ---- the intake ---- */

typedef struct {
  uint32_t len;
  uint32_t address; /* network order */
  uint16_t port;
  uint8_t data[];
} entry_t;

typedef struct {
  int fd, wake;
  pthread_t thread;
  int thread_started, closed, refs;
  napi_threadsafe_function tsfn;
  pthread_mutex_t lock; /* guards the guard, the queue and the counters */
  guard_t guard;
  entry_t **queue;
  size_t queued;
  int notified; /* a call into JS is pending: the thread does not ask again */
  double received, admitted, queue_dropped, truncated;
} intake_t;

static void intake_free(intake_t *in) {
  for (size_t i = 0; i < in->queued; i++) free(in->queue[i]);
  free(in->queue);
  free(in->guard.slots);
  pthread_mutex_destroy(&in->lock);
  free(in);
}

/* Both the JS object and the thread-safe function hold the struct; the last to go frees it. */
static void intake_unref(intake_t *in) {
  if (--in->refs == 0) intake_free(in);
}

static void *reader(void *arg) {
  intake_t *in = (intake_t *)arg;
  pthread_setname_np(pthread_self(), "nbdh-dhcp-in"); /* so per-thread CPU (top -H, /proc) names it */
  uint8_t (*bufs)[RECV_MAX] = malloc(RECV_BATCH * sizeof *bufs);
  if (bufs == NULL) return NULL;
  struct mmsghdr msgs[RECV_BATCH];
  struct iovec iov[RECV_BATCH];
  struct sockaddr_in from[RECV_BATCH];
  for (;;) {
    struct pollfd p[2] = {{.fd = in->fd, .events = POLLIN}, {.fd = in->wake, .events = POLLIN}};
    if (poll(p, 2, -1) < 0 && errno != EINTR) break;
    if (p[1].revents) break;
    if (!(p[0].revents & POLLIN)) {
      if (p[0].revents & (POLLERR | POLLNVAL)) {
        /* A pending socket error (ICMP): read it off so poll does not spin. */
        int err;
        socklen_t sl = sizeof err;
        getsockopt(in->fd, SOL_SOCKET, SO_ERROR, &err, &sl);
      }
      continue;
    }
    for (int i = 0; i < RECV_BATCH; i++) {
      iov[i].iov_base = bufs[i];
      iov[i].iov_len = RECV_MAX;
      memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      msgs[i].msg_hdr.msg_name = &from[i];
      msgs[i].msg_hdr.msg_namelen = sizeof from[i];
    }
    int n = recvmmsg(in->fd, msgs, RECV_BATCH, MSG_DONTWAIT, NULL);
    if (n <= 0) continue; /* EAGAIN, EINTR, or an ICMP error reported on this socket */
    double now = monotonic_ms();
    int ask = 0;
    pthread_mutex_lock(&in->lock);
    for (int i = 0; i < n; i++) {
      in->received++;
      size_t len = msgs[i].msg_len;
      if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
        in->truncated++;
        continue;
      }
      if (!guard_admit(&in->guard, bufs[i], len, now)) continue;
      if (in->queued >= QUEUE_MAX) {
        in->queue_dropped++;
        continue;
      }
      entry_t *e = malloc(sizeof *e + len);
      if (e == NULL) {
        in->queue_dropped++;
        continue;
      }
      e->len = (uint32_t)len;
      e->address = from[i].sin_addr.s_addr;
      e->port = ntohs(from[i].sin_port);
      memcpy(e->data, bufs[i], len);
      in->queue[in->queued++] = e;
      in->admitted++;
    }
    if (in->queued > 0 && !in->notified) {
      in->notified = 1;
      ask = 1;
    }
    pthread_mutex_unlock(&in->lock);
    if (ask) napi_call_threadsafe_function(in->tsfn, NULL, napi_tsfn_nonblocking);
  }
  free(bufs);
  return NULL;
}

/* On the JS thread: delivers everything queued, oldest first. */
static void deliver(napi_env env, napi_value js_cb, void *context, void *data) {
  (void)data;
  intake_t *in = (intake_t *)context;
  pthread_mutex_lock(&in->lock);
  size_t count = in->queued;
  entry_t **batch = NULL;
  if (count > 0) {
    batch = malloc(count * sizeof *batch);
    if (batch != NULL) {
      memcpy(batch, in->queue, count * sizeof *batch);
      in->queued = 0;
    } else {
      count = 0;
    }
  }
  in->notified = 0;
  pthread_mutex_unlock(&in->lock);
  for (size_t i = 0; i < count; i++) {
    entry_t *e = batch[i];
    if (env != NULL && js_cb != NULL && !in->closed) {
      napi_handle_scope scope;
      napi_open_handle_scope(env, &scope);
      napi_value argv[3], undefined, result;
      void *copy;
      char address[INET_ADDRSTRLEN];
      struct in_addr a = {.s_addr = e->address};
      inet_ntop(AF_INET, &a, address, sizeof address);
      napi_create_buffer_copy(env, e->len, e->data, &copy, &argv[0]);
      napi_create_string_utf8(env, address, NAPI_AUTO_LENGTH, &argv[1]);
      napi_create_uint32(env, e->port, &argv[2]);
      napi_get_undefined(env, &undefined);
      if (napi_call_function(env, undefined, js_cb, 3, argv, &result) == napi_pending_exception) {
        /* The handler threw: report it as Node reports an uncaught exception, and go on. */
        napi_value err;
        napi_get_and_clear_last_exception(env, &err);
        napi_fatal_exception(env, err);
      }
      napi_close_handle_scope(env, scope);
    }
    free(e);
  }
  free(batch);
}

static void tsfn_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  intake_unref((intake_t *)data);
}

static void intake_close(intake_t *in) {
  if (in->closed) return;
  in->closed = 1;
  if (in->thread_started) {
    uint64_t one = 1;
    if (write(in->wake, &one, sizeof one) < 0) { /* an eventfd write cannot fail here */
    }
    pthread_join(in->thread, NULL);
    in->thread_started = 0;
  }
  if (in->fd >= 0) close(in->fd);
  if (in->wake >= 0) close(in->wake);
  in->fd = in->wake = -1;
  if (in->tsfn != NULL) napi_release_threadsafe_function(in->tsfn, napi_tsfn_abort);
  in->tsfn = NULL;
}

static void wrap_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  intake_t *in = (intake_t *)data;
  intake_close(in);
  intake_unref(in);
}

/* The native struct behind `this`, or NULL with a TypeError naming the class. */
static void *unwrap_self(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv, const char *cls) {
  napi_value self;
  void *data = NULL;
  napi_get_cb_info(env, info, argc, argv, &self, NULL);
  if (napi_unwrap(env, self, &data) != napi_ok || data == NULL) {
    char msg[64];
    snprintf(msg, sizeof msg, "not a %s", cls);
    napi_throw_type_error(env, NULL, msg);
    return NULL;
  }
  return data;
}

static intake_t *unwrap_intake(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv) {
  return (intake_t *)unwrap_self(env, info, argc, argv, "DhcpIntake");
}

static napi_value intake_new(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], self;
  napi_get_cb_info(env, info, &argc, argv, &self, NULL);
  int32_t fd = -1;
  napi_valuetype t = napi_undefined;
  if (argc >= 2) napi_typeof(env, argv[1], &t);
  if (argc < 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0 || t != napi_function) {
    napi_throw_type_error(env, NULL, "new DhcpIntake(fd: number, onPacket: (buffer, address, port) => void)");
    return NULL;
  }
  intake_t *in = calloc(1, sizeof *in);
  if (in == NULL || (in->queue = malloc(QUEUE_MAX * sizeof *in->queue)) == NULL ||
      guard_init(&in->guard, 0, 1, DEFAULT_MAX_TRACKED) != 0) {
    if (in != NULL) {
      free(in->queue);
      free(in);
    }
    napi_throw_error(env, NULL, "DhcpIntake: out of memory");
    return NULL;
  }
  pthread_mutex_init(&in->lock, NULL);
  in->fd = fd;
  in->wake = eventfd(0, EFD_CLOEXEC);
  in->refs = 1;
  if (in->wake < 0) {
    int err = errno;
    intake_free(in);
    return throw_errno(env, "eventfd", err);
  }
  /* As large a receive buffer as we may have: SO_RCVBUFFORCE with CAP_NET_ADMIN, else up to rmem_max. */
  int size = RCVBUF_BYTES;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  napi_value name;
  napi_create_string_utf8(env, "DhcpIntake", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[1], NULL, name, 0, 1, in, tsfn_finalize, in, deliver, &in->tsfn) !=
      napi_ok) {
    close(in->wake);
    intake_free(in);
    napi_throw_error(env, NULL, "DhcpIntake: napi_create_threadsafe_function failed");
    return NULL;
  }
  in->refs = 2;
  if (napi_wrap(env, self, in, wrap_finalize, NULL, NULL) != napi_ok) {
    in->fd = -1; /* the caller still owns it */
    intake_close(in);
    intake_unref(in);
    napi_throw_error(env, NULL, "DhcpIntake: wrap failed");
    return NULL;
  }
  int err = pthread_create(&in->thread, NULL, reader, in);
  if (err != 0) return throw_errno(env, "pthread_create", err);
  in->thread_started = 1;
  return self;
}

static napi_value intake_set_guard(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  intake_t *in = unwrap_intake(env, info, &argc, argv);
  if (in == NULL) return NULL;
  double rate = 0, burst = 0;
  if (argc < 2 || napi_get_value_double(env, argv[0], &rate) != napi_ok ||
      napi_get_value_double(env, argv[1], &burst) != napi_ok || rate < 0 || burst < 1) {
    napi_throw_type_error(env, NULL, "setGuard(perMacPerSecond >= 0, burst >= 1)");
    return NULL;
  }
  pthread_mutex_lock(&in->lock);
  in->guard.rate = rate;
  in->guard.burst = burst;
  pthread_mutex_unlock(&in->lock);
  return NULL;
}

static napi_value intake_send(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], result;
  intake_t *in = unwrap_intake(env, info, &argc, argv);
  if (in == NULL) return NULL;
  void *data = NULL;
  size_t len = 0;
  char address[64] = {0};
  size_t got = 0;
  int32_t port = -1;
  struct sockaddr_in to = {.sin_family = AF_INET};
  if (argc < 3 || napi_get_buffer_info(env, argv[0], &data, &len) != napi_ok ||
      napi_get_value_string_utf8(env, argv[1], address, sizeof address, &got) != napi_ok ||
      napi_get_value_int32(env, argv[2], &port) != napi_ok || port < 0 || port > 65535 ||
      inet_pton(AF_INET, address, &to.sin_addr) != 1) {
    napi_throw_type_error(env, NULL, "send(buffer: Buffer, address: IPv4 string, port: number)");
    return NULL;
  }
  to.sin_port = htons((uint16_t)port);
  int rc = 0;
  if (in->fd < 0) rc = -EBADF;
  else if (sendto(in->fd, data, len, MSG_DONTWAIT, (struct sockaddr *)&to, sizeof to) < 0) rc = -errno;
  napi_create_int32(env, rc, &result);
  return result;
}

static napi_value intake_summary(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  intake_t *in = unwrap_intake(env, info, &argc, NULL);
  if (in == NULL) return NULL;
  pthread_mutex_lock(&in->lock);
  napi_value result = guard_summary(env, &in->guard);
  pthread_mutex_unlock(&in->lock);
  return result;
}

static napi_value intake_stats(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  intake_t *in = unwrap_intake(env, info, &argc, NULL);
  if (in == NULL) return NULL;
  napi_value result, v;
  napi_create_object(env, &result);
  pthread_mutex_lock(&in->lock);
  double counts[4] = {in->received, in->admitted, in->queue_dropped, in->truncated};
  pthread_mutex_unlock(&in->lock);
  const char *names[4] = {"received", "admitted", "queueDropped", "truncated"};
  for (int i = 0; i < 4; i++) {
    napi_create_double(env, counts[i], &v);
    napi_set_named_property(env, result, names[i], v);
  }
  return result;
}

static napi_value intake_close_js(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  intake_t *in = unwrap_intake(env, info, &argc, NULL);
  if (in != NULL) intake_close(in);
  return NULL;
}

/* ---- MacGuard: the admission alone, for its tests ---- */

static void mac_guard_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  guard_t *g = (guard_t *)data;
  free(g->slots);
  free(g);
}

static guard_t *unwrap_guard(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv) {
  return (guard_t *)unwrap_self(env, info, argc, argv, "MacGuard");
}

static napi_value mac_guard_new(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], self;
  napi_get_cb_info(env, info, &argc, argv, &self, NULL);
  double rate = 0, burst = 0;
  uint32_t max_tracked = 0;
  if (argc < 3 || napi_get_value_double(env, argv[0], &rate) != napi_ok ||
      napi_get_value_double(env, argv[1], &burst) != napi_ok ||
      napi_get_value_uint32(env, argv[2], &max_tracked) != napi_ok || rate < 0 || burst < 1 || max_tracked < 1 ||
      max_tracked > (1u << 24)) {
    napi_throw_type_error(env, NULL, "new MacGuard(perMacPerSecond >= 0, burst >= 1, maxTracked 1..16777216)");
    return NULL;
  }
  guard_t *g = calloc(1, sizeof *g);
  if (g == NULL || guard_init(g, rate, burst, max_tracked) != 0) {
    free(g);
    napi_throw_error(env, NULL, "MacGuard: out of memory");
    return NULL;
  }
  if (napi_wrap(env, self, g, mac_guard_finalize, NULL, NULL) != napi_ok) {
    free(g->slots);
    free(g);
    napi_throw_error(env, NULL, "MacGuard: wrap failed");
    return NULL;
  }
  return self;
}

static napi_value mac_guard_admit(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], result;
  guard_t *g = unwrap_guard(env, info, &argc, argv);
  if (g == NULL) return NULL;
  void *data = NULL;
  size_t len = 0;
  double now = 0;
  if (argc < 2 || napi_get_buffer_info(env, argv[0], &data, &len) != napi_ok ||
      napi_get_value_double(env, argv[1], &now) != napi_ok) {
    napi_throw_type_error(env, NULL, "admit(buffer: Buffer, nowMs: number)");
    return NULL;
  }
  napi_get_boolean(env, guard_admit(g, (const uint8_t *)data, len, now), &result);
  return result;
}

static napi_value mac_guard_summary(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  guard_t *g = unwrap_guard(env, info, &argc, NULL);
  return g == NULL ? NULL : guard_summary(env, g);
}

static napi_value mac_guard_tracked(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  napi_value result;
  guard_t *g = unwrap_guard(env, info, &argc, NULL);
  if (g == NULL) return NULL;
  napi_create_uint32(env, g->tracked, &result);
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor intake_methods[] = {
      {"setGuard", NULL, intake_set_guard, NULL, NULL, NULL, napi_default, NULL},
      {"send", NULL, intake_send, NULL, NULL, NULL, napi_default, NULL},
      {"summary", NULL, intake_summary, NULL, NULL, NULL, napi_default, NULL},
      {"stats", NULL, intake_stats, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, intake_close_js, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_property_descriptor guard_methods[] = {
      {"admit", NULL, mac_guard_admit, NULL, NULL, NULL, napi_default, NULL},
      {"summary", NULL, mac_guard_summary, NULL, NULL, NULL, napi_default, NULL},
      {"tracked", NULL, mac_guard_tracked, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_value cls;
  if (napi_define_class(env, "DhcpIntake", NAPI_AUTO_LENGTH, intake_new, NULL,
                        sizeof intake_methods / sizeof intake_methods[0], intake_methods, &cls) != napi_ok)
    return NULL;
  napi_set_named_property(env, exports, "DhcpIntake", cls);
  if (napi_define_class(env, "MacGuard", NAPI_AUTO_LENGTH, mac_guard_new, NULL,
                        sizeof guard_methods / sizeof guard_methods[0], guard_methods, &cls) != napi_ok)
    return NULL;
  napi_set_named_property(env, exports, "MacGuard", cls);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
