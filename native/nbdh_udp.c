/*
 * nbdh_udp: a UDP socket for one TFTP transfer, polled by Node's own libuv loop, with a pump.
 *
 * Why: in a lockstep (windowsize 1) transfer every block costs one datagram in and one out. Through
 * node:dgram each received datagram builds a Buffer and an rinfo object and crosses into JS, and each
 * send goes through argument checks and a request object: about 8-10 us more per block than tftpd-hpa
 * spends in C, which made our lockstep throughput 0.8-0.95x of tftpd-hpa's (bench/results/tftp.md).
 * The pump answers the one ACK it expects (the last block sent) by sending the next ready-made DATA
 * packet, or the next window of them (RFC 7440: shim's and GRUB's windowsize 4, where a window's ACK
 * through JS cost a callback and a send(2) per packet), here, without entering JS. Everything else (OACK,
 * ERROR, a duplicate ACK or one inside a window, the end of the prepared packets, timeouts) goes to the
 * TypeScript transfer, which owns the protocol.
 *
 *   new UdpChannel(family 4|6, address, port)   socket(2) non-blocking with SO_REUSEADDR, bind(2)
 *   .port()                                     the bound port (the server's transfer ID)
 *   .connect(address, port)                     connect(2): only the client's datagrams arrive here
 *   .start(onPacket, onAdvance)                 polls; onPacket(buffer, lastSent) for what the pump
 *                                               does not take (lastSent: the pump's last block sent);
 *                                               onAdvance(firstBlock) when the pump moved on to the
 *                                               queued chunk (called after that chunk's first send)
 *   .send(buffer) -> 0 | -errno                 one send(2), never blocks (EAGAIN counts as a loss)
 *   .arm(store, stride, firstBlock, lastBlock, lastSent, window = 1)
 *                                               pump: on ACK (lastSent & 0xffff) send the next window,
 *                                               blocks lastSent + 1 .. min(lastSent + window, lastBlock),
 *                                               when all of them are prepared (RFC 7440; window 1 is
 *                                               lockstep). A chunk is one Buffer with a packet every
 *                                               `stride` bytes (the last may be shorter): the transfer
 *                                               hands over one buffer, not one per block
 *   .queue(store, stride, firstBlock)           the chunk that follows the armed one: the pump goes on
 *                                               into it without stopping at the chunk's end
 *   .disarm()
 *   .pending()                                  whether a datagram waits unread: in the socket (FIONREAD), or
 *                                               read by a pump thread and not yet handed to JS
 *   .lastSent() / .lastProgress()               the pump's last block sent, and when (uv_hrtime in ms,
 *                                             the clock of process.hrtime)
 *   .windowFirst()                              the first block of the last window the pump sent: the
 *                                               first the client has not acknowledged
 *   .close()                                    stops polling and closes the socket (idempotent)
 *
 * Blocks are absolute (1-based, beyond 65535); the wire carries them modulo 65536.
 *
 * Batching (io_uring, nbdh_ring.h): in a storm, one wake-up of the loop finds many transfers' ACKs ready.
 * A readable channel is then only noted; a check handle, run right after the loop's poll phase, reads all
 * noted channels with one io_uring_enter and sends all the pump's answers with one more. That is two
 * system calls for the batch instead of two per datagram, and one preemption by the woken clients instead
 * of one per send. Every entry carries MSG_DONTWAIT, so it completes inside the submit: when the flush
 * returns, each send is done (the transfer reuses chunk memory on that promise). Off where io_uring is not
 * available, or with NETBOOT_TFTP_BATCH=0; then each readable channel reads and answers at once.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <node_api.h>
#include "nbdh_errno.h"
#include "nbdh_pool.h"
#include "nbdh_ring.h"
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#define RECV_BUFFER 65536
/* Datagrams handled per wake-up before yielding to the rest of the loop. */
#define RECV_BURST 64
/* The largest window the pump sends itself; a transfer with a larger one answers every ACK in JS. */
#define WINDOW_MAX 64

/*
 * Prepared DATA packets for blocks first .. first + count - 1, one every `stride` bytes of `base` (the
 * last may be shorter), kept alive by a reference to their Buffer.
 */
typedef struct {
  napi_ref ref;
  uint8_t *base;
  size_t size;
  size_t stride;
  uint32_t count;
  int64_t first;
} chunk_t;

/* One packet the pump sends: it points into a chunk. */
typedef struct {
  const uint8_t *data;
  size_t len;
} packet_ref_t;

/* Ready channels handled in one pair of submits (the ring has this many entries). */
#define BATCH_MAX 256

struct channel;

/*
 * One per Node environment (its loop): the ring and the channels noted readable since the last flush,
 * and the pump threads when the server asked for them (usePumpThreads).
 */
typedef struct {
  int enabled;
  nbdh_ring_t ring;
  uv_check_t check;
  struct channel **ready;
  size_t count, capacity;
  nbdh_pool_t *pool;
  int pool_decided; /* usePumpThreads was called: the answer stays for the environment's life */
} batcher_t;

/* What a pump thread posts to the loop (nbdh_event_t.kind). */
enum { EV_PACKET = 0, EV_ADVANCED = 1 };

enum { ACT_NONE, ACT_DELIVER, ACT_ADVANCED };

typedef struct channel {
  napi_env env;
  /*
   * Pump threads: the channel's socket belongs to one worker (member), which reads it and runs the pump;
   * mu guards the pump's state and `closed` between that worker and the loop. Unused locks are cheap.
   */
  nbdh_pool_t *pool;
  nbdh_member_t member;
  pthread_mutex_t mu;
  int undelivered; /* datagrams posted to the loop and not yet dispatched: still waiting, as in the socket */
  chunk_t *retired; /* the chunk the pump thread moved past, until it is posted to the loop */
  uv_poll_t poll;
  batcher_t *batch; /* NULL: read and answer at once */
  int queued;       /* in batch->ready */
  int received;     /* the batched read's result: bytes, or -errno */
  int action;
  int fd;
  int family;
  int polling; /* uv_poll_start done */
  int closed;  /* close() called */
  napi_ref self;
  napi_ref on_packet;
  napi_ref on_advance;
  napi_async_context async;
  /* pump */
  int armed;
  chunk_t cur;
  chunk_t next;
  int64_t last_block;
  int64_t last_sent;
  int64_t window_first; /* first block of the last window sent */
  uint32_t window;      /* blocks per window: 1 in lockstep */
  double last_progress;
  uint8_t buf[RECV_BUFFER];
} channel_t;

static int parse_address(int family, const char *text, int port, struct sockaddr_storage *ss, socklen_t *sl) {
  memset(ss, 0, sizeof *ss);
  if (family == 6) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons((uint16_t)port);
    if (inet_pton(AF_INET6, text, &a->sin6_addr) != 1) return -1;
    *sl = sizeof *a;
  } else {
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, text, &a->sin_addr) != 1) return -1;
    *sl = sizeof *a;
  }
  return 0;
}

static channel_t *unwrap_this(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv) {
  napi_value self;
  if (napi_get_cb_info(env, info, argc, argv, &self, NULL) != napi_ok) return NULL;
  channel_t *ch = NULL;
  if (napi_unwrap(env, self, (void **)&ch) != napi_ok || ch == NULL) {
    napi_throw_error(env, NULL, "UdpChannel: not a channel");
    return NULL;
  }
  return ch;
}

static void chunk_release(napi_env env, chunk_t *c) {
  if (c->ref) napi_delete_reference(env, c->ref);
  memset(c, 0, sizeof *c);
}

static void release_packets(channel_t *ch) {
  ch->armed = 0;
  chunk_release(ch->env, &ch->cur);
  chunk_release(ch->env, &ch->next);
}

/* Calls a JS callback from the loop (not from JS): a handle scope, and make_callback for the async context. */
static void call_js(channel_t *ch, napi_ref fn, size_t argc, napi_value *argv) {
  napi_env env = ch->env;
  napi_value cb, self, result;
  if (fn == NULL || napi_get_reference_value(env, fn, &cb) != napi_ok || napi_get_reference_value(env, ch->self, &self) != napi_ok)
    return;
  if (napi_make_callback(env, ch->async, self, cb, argc, argv, &result) != napi_ok) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (pending) {
      napi_value err;
      napi_get_and_clear_last_exception(env, &err);
      napi_fatal_exception(env, err);
    }
  }
}

/*
 * The pump: the ACK of the last block sent sends the next window (one packet in lockstep), going on into
 * the queued chunk when the window reaches it. Only a whole window is taken: when a block of it is not
 * prepared, the ACK goes to JS, which reads and sends. Returns 0 when the datagram is not for it, else
 * 1, or 2 when it moved into the queued chunk (JS is told, to read the chunk after); the packets to send
 * are in out[0 .. *count - 1]. They may point into the chunk it moved past: that memory stays valid until
 * JS runs, and every caller sends before it lets JS run.
 */
static int pump_take(channel_t *ch, const uint8_t *p, ssize_t n, packet_ref_t *out, unsigned *count, chunk_t *retired) {
  *count = 0;
  if (!ch->armed || n < 4 || p[0] != 0 || p[1] != 4) return 0;
  uint16_t block = (uint16_t)((p[2] << 8) | p[3]);
  if (block != (uint16_t)(ch->last_sent & 0xffff)) return 0;
  int64_t want = ch->last_sent + 1;
  if (want > ch->last_block || want < ch->cur.first) return 0;
  int64_t end = ch->last_sent + (ch->window ? ch->window : 1);
  if (end > ch->last_block) end = ch->last_block;
  int64_t cur_end = ch->cur.first + (int64_t)ch->cur.count; /* one past the current chunk */
  int next_follows = ch->next.ref != NULL && ch->next.first == cur_end;
  if (end >= (next_follows ? ch->next.first + (int64_t)ch->next.count : cur_end)) return 0;
  int moved = 0;
  for (int64_t b = want; b <= end; b++) {
    if (b >= ch->cur.first + (int64_t)ch->cur.count) {
      /* A pump thread may not touch JS references: the loop releases the chunk it hands back. */
      if (retired != NULL) *retired = ch->cur;
      else chunk_release(ch->env, &ch->cur);
      ch->cur = ch->next;
      memset(&ch->next, 0, sizeof ch->next);
      moved = 1;
    }
    size_t at = (size_t)(b - ch->cur.first) * ch->cur.stride;
    out[*count].data = ch->cur.base + at;
    out[*count].len = ch->cur.size - at < ch->cur.stride ? ch->cur.size - at : ch->cur.stride;
    (*count)++;
  }
  ch->window_first = want;
  ch->last_sent = end;
  ch->last_progress = (double)uv_hrtime() / 1e6;
  return moved ? 2 : 1;
}

/* Sends a window on the connected socket: one send, or one sendmmsg. A packet not sent is a loss. */
static void send_packets(int fd, const packet_ref_t *out, unsigned count) {
  if (count == 1) {
    /* A failed send (ENOBUFS, EAGAIN) is a loss: the transfer's timeout sends the block again. */
    (void)send(fd, out[0].data, out[0].len, MSG_DONTWAIT);
    return;
  }
  struct mmsghdr msgs[WINDOW_MAX];
  struct iovec iov[WINDOW_MAX];
  memset(msgs, 0, count * sizeof msgs[0]);
  for (unsigned i = 0; i < count; i++) {
    iov[i].iov_base = (void *)out[i].data;
    iov[i].iov_len = out[i].len;
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  (void)sendmmsg(fd, msgs, count, MSG_DONTWAIT);
}

static int pump(channel_t *ch, const uint8_t *p, ssize_t n) {
  packet_ref_t out[WINDOW_MAX];
  unsigned count;
  int took = pump_take(ch, p, n, out, &count, NULL);
  if (took) send_packets(ch->fd, out, count);
  return took;
}

static void deliver(channel_t *ch, const uint8_t *p, ssize_t n, int64_t last_sent) {
  napi_handle_scope scope;
  if (napi_open_handle_scope(ch->env, &scope) != napi_ok) return;
  napi_value argv[2];
  void *copy;
  if (napi_create_buffer_copy(ch->env, (size_t)n, p, &copy, &argv[0]) == napi_ok && napi_create_int64(ch->env, last_sent, &argv[1]) == napi_ok)
    call_js(ch, ch->on_packet, 2, argv);
  napi_close_handle_scope(ch->env, scope);
}

static void advanced(channel_t *ch, int64_t first) {
  napi_handle_scope scope;
  if (napi_open_handle_scope(ch->env, &scope) != napi_ok) return;
  napi_value argv[1];
  if (napi_create_int64(ch->env, first, &argv[0]) == napi_ok) call_js(ch, ch->on_advance, 1, argv);
  napi_close_handle_scope(ch->env, scope);
}

/* Reads what the socket has (up to RECV_BURST datagrams) and answers each at once: the unbatched path. */
static void read_now(channel_t *ch) {
  for (int i = 0; i < RECV_BURST && !ch->closed; i++) {
    ssize_t n = recv(ch->fd, ch->buf, sizeof ch->buf, MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      /* EAGAIN: drained. ECONNREFUSED (an ICMP error for an earlier send): the timeout deals with it. */
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      continue;
    }
    int took = pump(ch, ch->buf, n);
    if (took == 2) advanced(ch, ch->cur.first);
    else if (took == 0) deliver(ch, ch->buf, n, ch->last_sent);
  }
}

static void note_received(uint64_t user_data, int32_t res, void *ctx) {
  (void)ctx;
  ((channel_t *)(uintptr_t)user_data)->received = res;
}

static void note_sent(uint64_t user_data, int32_t res, void *ctx) {
  (void)user_data;
  (void)res; /* a failed send is a loss, as in pump() */
  (void)ctx;
}

/* Queues the pump's packets as sends on the ring; when it fills, what is queued is submitted first. */
static void ring_sends(nbdh_ring_t *ring, unsigned *sends, channel_t *ch, const packet_ref_t *out, unsigned count) {
  for (unsigned i = 0; i < count; i++) {
    struct io_uring_sqe *sqe = nbdh_ring_sqe(ring);
    if (sqe == NULL && *sends > 0) {
      if (nbdh_ring_submit(ring, *sends) >= 0) nbdh_ring_reap(ring, note_sent, NULL);
      *sends = 0;
      sqe = nbdh_ring_sqe(ring);
    }
    if (sqe == NULL) return; /* a loss: the transfer's timeout sends it again */
    nbdh_ring_prep(sqe, IORING_OP_SEND, ch->fd, out[i].data, out[i].len, MSG_DONTWAIT, (uint64_t)(uintptr_t)ch);
    (*sends)++;
  }
}

static channel_t *member_channel(void *member) {
  return (channel_t *)((char *)member - offsetof(channel_t, member));
}

static void post(channel_t *ch, int kind, int64_t value, void *data, size_t len) {
  nbdh_event_t *ev = calloc(1, sizeof *ev);
  if (ev == NULL) {
    free(data); /* a lost datagram or chunk notice: the transfer's timeout recovers */
    return;
  }
  ev->owner = &ch->member;
  ev->kind = kind;
  ev->value = value;
  ev->data = data;
  ev->len = len;
  nbdh_pool_post(ch->pool, ev);
}

/* What the pump took from one received datagram, on its thread: the answer is sent by the caller. */
static int thread_take(channel_t *ch, ssize_t n, packet_ref_t *out, unsigned *count) {
  chunk_t retired;
  memset(&retired, 0, sizeof retired);
  int took = pump_take(ch, ch->buf, n, out, count, &retired);
  if (took == 2) {
    chunk_t *old = malloc(sizeof *old);
    if (old != NULL) *old = retired; /* else its reference leaks: never freed under a sender */
    ch->action = ACT_ADVANCED;
    ch->retired = old;
  } else if (took == 0) {
    ch->action = ACT_DELIVER;
  }
  return took;
}

/* Posts what thread_take left for the loop; after the answers are sent, so JS never races a send. */
static void thread_post(channel_t *ch, ssize_t n) {
  if (ch->action == ACT_ADVANCED) {
    post(ch, EV_ADVANCED, ch->cur.first, ch->retired, sizeof(chunk_t));
    ch->retired = NULL;
  } else if (ch->action == ACT_DELIVER) {
    uint8_t *copy = malloc((size_t)n ? (size_t)n : 1);
    if (copy != NULL) {
      memcpy(copy, ch->buf, (size_t)n);
      ch->undelivered++;
      post(ch, EV_PACKET, ch->last_sent, copy, (size_t)n);
    }
  }
  ch->action = ACT_NONE;
}

/* One channel, unbatched: reads what its socket has (up to RECV_BURST) and answers each at once. */
static void thread_serve(channel_t *ch) {
  pthread_mutex_lock(&ch->mu);
  for (int i = 0; i < RECV_BURST && !ch->closed; i++) {
    ssize_t n = recv(ch->fd, ch->buf, sizeof ch->buf, MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      continue; /* ECONNREFUSED (an ICMP error, now cleared): the timeout deals with it */
    }
    packet_ref_t out[WINDOW_MAX];
    unsigned count;
    if (thread_take(ch, n, out, &count)) send_packets(ch->fd, out, count);
    thread_post(ch, n);
  }
  pthread_mutex_unlock(&ch->mu);
}

/* A pump thread's io_uring (as the loop's batcher): NULL when off or refused. */
typedef struct {
  nbdh_ring_t ring;
  int broken;
} thread_ring_t;

static void *thread_ring_init(void) {
  const char *setting = getenv("NETBOOT_TFTP_BATCH");
  if (setting != NULL && strcmp(setting, "0") == 0) return NULL;
  thread_ring_t *r = calloc(1, sizeof *r);
  if (r != NULL && nbdh_ring_init(&r->ring, BATCH_MAX) == 0) return r;
  free(r);
  return NULL;
}

static void thread_ring_free(void *local) {
  thread_ring_t *r = (thread_ring_t *)local;
  if (r == NULL) return;
  nbdh_ring_free(&r->ring);
  free(r);
}

/*
 * On a pump thread, with every channel one epoll_wait found readable: one submit reads them all, one
 * more sends every answer the pump has (as the loop's flush_some does), then the rest goes to the loop.
 * The channels stay locked for the batch; the loop never holds two channel locks, so this cannot deadlock.
 */
static void thread_ready(void **members, int count, void *local) {
  thread_ring_t *r = (thread_ring_t *)local;
  if (r == NULL || r->broken || count > BATCH_MAX) {
    for (int i = 0; i < count; i++) thread_serve(member_channel(members[i]));
    return;
  }
  channel_t *chs[BATCH_MAX];
  unsigned reads = 0, sends = 0;
  for (int i = 0; i < count; i++) {
    channel_t *ch = member_channel(members[i]);
    chs[i] = ch;
    pthread_mutex_lock(&ch->mu);
    ch->received = -EAGAIN;
    ch->action = ACT_NONE;
    if (ch->closed) continue;
    struct io_uring_sqe *sqe = nbdh_ring_sqe(&r->ring);
    if (sqe == NULL) continue;
    nbdh_ring_prep(sqe, IORING_OP_RECV, ch->fd, ch->buf, sizeof ch->buf, MSG_DONTWAIT, (uint64_t)(uintptr_t)ch);
    reads++;
  }
  if (reads > 0 && nbdh_ring_submit(&r->ring, reads) < 0) {
    /* The ring's state is unknown: never enter it again (as flush_some). */
    r->broken = 1;
    for (int i = 0; i < count; i++) pthread_mutex_unlock(&chs[i]->mu);
    for (int i = 0; i < count; i++) thread_serve(chs[i]);
    return;
  }
  if (reads > 0) nbdh_ring_reap(&r->ring, note_received, NULL);
  for (int i = 0; i < count; i++) {
    channel_t *ch = chs[i];
    if (ch->received < 0 || ch->closed) continue;
    packet_ref_t out[WINDOW_MAX];
    unsigned count;
    if (thread_take(ch, ch->received, out, &count) == 0) continue;
    ring_sends(&r->ring, &sends, ch, out, count);
  }
  if (sends > 0 && nbdh_ring_submit(&r->ring, sends) >= 0) nbdh_ring_reap(&r->ring, note_sent, NULL);
  for (int i = 0; i < count; i++) {
    channel_t *ch = chs[i];
    if (ch->received >= 0 && !ch->closed) thread_post(ch, ch->received);
    ch->action = ACT_NONE;
    pthread_mutex_unlock(&ch->mu);
  }
}

static void channel_released(channel_t *ch);

/* On the loop: what the pump threads posted. */
static void thread_dispatch(nbdh_event_t *ev) {
  channel_t *ch = member_channel(ev->owner);
  if (ev->kind == NBDH_EV_REMOVED) {
    channel_released(ch);
    return;
  }
  if (ev->kind == EV_ADVANCED) {
    if (ev->data != NULL) chunk_release(ch->env, (chunk_t *)ev->data);
    if (!ch->closed) advanced(ch, ev->value);
  } else if (ev->kind == EV_PACKET) {
    pthread_mutex_lock(&ch->mu);
    ch->undelivered--;
    pthread_mutex_unlock(&ch->mu);
    if (!ch->closed) deliver(ch, ev->data, (ssize_t)ev->len, ev->value);
  }
}

/* Reads, and answers, up to BATCH_MAX noted channels with two submits; then tells JS what is its. */
static void flush_some(batcher_t *b, channel_t **chs, size_t k) {
  unsigned reads = 0, sends = 0;
  for (size_t i = 0; i < k; i++) {
    channel_t *ch = chs[i];
    ch->queued = 0;
    ch->received = -EAGAIN;
    ch->action = ACT_NONE;
    if (ch->closed || ch->fd < 0) continue;
    struct io_uring_sqe *sqe = nbdh_ring_sqe(&b->ring);
    if (sqe == NULL) break;
    nbdh_ring_prep(sqe, IORING_OP_RECV, ch->fd, ch->buf, sizeof ch->buf, MSG_DONTWAIT, (uint64_t)(uintptr_t)ch);
    reads++;
  }
  if (reads == 0) return;
  if (nbdh_ring_submit(&b->ring, reads) < 0) {
    /*
     * Not expected (the completion queue is twice the batch and always drained), but then the ring's state
     * is unknown: never enter it again, and serve these channels, and all later ones, without batching.
     */
    b->enabled = 0;
    for (size_t i = 0; i < k; i++)
      if (!chs[i]->closed) read_now(chs[i]);
    return;
  }
  nbdh_ring_reap(&b->ring, note_received, NULL);
  for (size_t i = 0; i < k; i++) {
    channel_t *ch = chs[i];
    if (ch->received < 0 || ch->closed) continue;
    packet_ref_t out[WINDOW_MAX];
    unsigned count;
    int took = pump_take(ch, ch->buf, ch->received, out, &count, NULL);
    if (took == 0) {
      ch->action = ACT_DELIVER;
      continue;
    }
    ring_sends(&b->ring, &sends, ch, out, count);
    if (took == 2) ch->action = ACT_ADVANCED;
  }
  if (sends > 0 && nbdh_ring_submit(&b->ring, sends) >= 0) nbdh_ring_reap(&b->ring, note_sent, NULL);
  /* JS last: it may close, re-arm or send on any channel, and every batched send is already done. */
  for (size_t i = 0; i < k; i++) {
    channel_t *ch = chs[i];
    if (ch->closed) continue;
    if (ch->action == ACT_DELIVER) deliver(ch, ch->buf, ch->received, ch->last_sent);
    else if (ch->action == ACT_ADVANCED) advanced(ch, ch->cur.first);
    ch->action = ACT_NONE;
  }
}

static void flush_ready(uv_check_t *handle) {
  batcher_t *b = (batcher_t *)handle->data;
  /* JS callbacks can note no new channel (that happens only in the poll phase), so count is stable. */
  for (size_t start = 0; start < b->count && b->enabled; start += BATCH_MAX) {
    size_t k = b->count - start < BATCH_MAX ? b->count - start : BATCH_MAX;
    flush_some(b, b->ready + start, k);
  }
  b->count = 0;
}

static void batcher_closed(uv_handle_t *handle) {
  batcher_t *b = (batcher_t *)handle->data;
  free(b->ready);
  free(b);
}

static void batcher_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  batcher_t *b = (batcher_t *)data;
  if (b->pool != NULL) nbdh_pool_destroy(b->pool);
  if (!b->enabled) {
    free(b);
    return;
  }
  nbdh_ring_free(&b->ring);
  uv_check_stop(&b->check);
  uv_close((uv_handle_t *)&b->check, batcher_closed);
}

/* The environment's state (batcher and pump threads), made on first use; NULL only when out of memory. */
static batcher_t *state_for(napi_env env, uv_loop_t *loop) {
  batcher_t *b = NULL;
  if (napi_get_instance_data(env, (void **)&b) == napi_ok && b != NULL) return b;
  b = calloc(1, sizeof *b);
  if (b == NULL) return NULL;
  const char *setting = getenv("NETBOOT_TFTP_BATCH");
  b->enabled = !(setting != NULL && strcmp(setting, "0") == 0);
  if (b->enabled && nbdh_ring_init(&b->ring, BATCH_MAX) != 0) b->enabled = 0;
  if (b->enabled) {
    uv_check_init(loop, &b->check);
    b->check.data = b;
    uv_check_start(&b->check, flush_ready);
    uv_unref((uv_handle_t *)&b->check); /* never keeps the process alive by itself */
  }
  napi_set_instance_data(env, b, batcher_finalize, NULL);
  return b;
}

/* The environment's batcher; NULL when batching is off. */
static batcher_t *batcher_for(napi_env env, uv_loop_t *loop) {
  batcher_t *b = state_for(env, loop);
  return b != NULL && b->enabled ? b : NULL;
}

/*
 * usePumpThreads(n) -> threads in use. The first call decides for the environment: n > 0 starts n pump
 * threads that own every channel started afterwards; 0 keeps the pump on the loop. Later calls only
 * report (channels already started cannot move).
 */
static napi_value use_pump_threads(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t wanted = 0;
  if (argc < 1 || napi_get_value_int32(env, argv[0], &wanted) != napi_ok || wanted < 0 || wanted > NBDH_POOL_MAX_THREADS) {
    napi_throw_range_error(env, NULL, "usePumpThreads(threads: 0..64)");
    return NULL;
  }
  uv_loop_t *loop;
  batcher_t *b = napi_get_uv_event_loop(env, &loop) == napi_ok ? state_for(env, loop) : NULL;
  if (b != NULL && !b->pool_decided) {
    b->pool_decided = 1;
    nbdh_pool_hooks_t hooks = {thread_ready, thread_dispatch, thread_ring_init, thread_ring_free};
    b->pool = nbdh_pool_create(loop, wanted, hooks);
  }
  napi_value v;
  napi_create_int32(env, b != NULL && b->pool != NULL ? b->pool->threads : 0, &v);
  return v;
}

static napi_value batching(napi_env env, napi_callback_info info) {
  (void)info;
  uv_loop_t *loop;
  napi_value v;
  napi_get_boolean(env, napi_get_uv_event_loop(env, &loop) == napi_ok && batcher_for(env, loop) != NULL, &v);
  return v;
}

static void on_readable(uv_poll_t *handle, int status, int events) {
  channel_t *ch = (channel_t *)handle->data;
  if (status < 0) {
    /*
     * libuv stops a poll handle on POLLERR, which a connected UDP socket raises for an ICMP error (port
     * unreachable while the client re-binds, for one). Reading SO_ERROR clears it; poll again and read.
     */
    int err = 0;
    socklen_t len = sizeof err;
    (void)getsockopt(ch->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (ch->closed || uv_poll_start(&ch->poll, UV_READABLE, on_readable) != 0) return;
  } else if (!(events & UV_READABLE))
    return;
  if (ch->batch != NULL && ch->batch->enabled) {
    batcher_t *b = ch->batch;
    if (ch->queued) return;
    if (b->count == b->capacity) {
      size_t cap = b->capacity ? b->capacity * 2 : 256;
      struct channel **grown = realloc(b->ready, cap * sizeof *grown);
      if (grown == NULL) return; /* still readable: the next poll brings it back */
      b->ready = grown;
      b->capacity = cap;
    }
    ch->queued = 1;
    b->ready[b->count++] = ch;
    return;
  }
  read_now(ch);
}

/* The loop's handle, or the pump thread, has let go of the socket: close it and drop the references. */
static void channel_released(channel_t *ch) {
  napi_env env = ch->env;
  if (ch->fd >= 0) close(ch->fd);
  ch->fd = -1;
  release_packets(ch);
  if (ch->on_packet) napi_delete_reference(env, ch->on_packet);
  ch->on_packet = NULL;
  if (ch->on_advance) napi_delete_reference(env, ch->on_advance);
  ch->on_advance = NULL;
  if (ch->async) napi_async_destroy(env, ch->async);
  ch->async = NULL;
  /* The object may be collected now; its finalizer frees the struct. */
  if (ch->self) napi_delete_reference(env, ch->self);
  ch->self = NULL;
}

static void on_closed(uv_handle_t *handle) {
  channel_released((channel_t *)handle->data);
}

static void finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  channel_t *ch = (channel_t *)data;
  /* Never started (or closed without polling): nothing is registered with the loop. */
  if (!ch->polling && ch->fd >= 0) close(ch->fd);
  /* References were deleted when the handle closed. (A chunk armed on a channel never started would keep
   * its reference; no transfer arms before start.) */
  pthread_mutex_destroy(&ch->mu);
  free(ch);
}

static napi_value channel_new(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], self;
  napi_get_cb_info(env, info, &argc, argv, &self, NULL);
  int32_t family = 0, port = -1;
  char address[64] = {0};
  size_t got = 0;
  if (argc < 3 || napi_get_value_int32(env, argv[0], &family) != napi_ok || (family != 4 && family != 6) ||
      napi_get_value_string_utf8(env, argv[1], address, sizeof address, &got) != napi_ok ||
      napi_get_value_int32(env, argv[2], &port) != napi_ok || port < 0 || port > 65535) {
    napi_throw_type_error(env, NULL, "new UdpChannel(family: 4 | 6, address: string, port: number)");
    return NULL;
  }
  struct sockaddr_storage ss;
  socklen_t sl;
  if (parse_address(family, address, port, &ss, &sl) != 0) {
    napi_throw_type_error(env, NULL, "UdpChannel: address is not an IP literal of that family");
    return NULL;
  }
  int fd = socket(family == 6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  int one = 1;
  /* SO_REUSEADDR lets the transfer's unconnected stray-packet socket share this port. */
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 || bind(fd, (struct sockaddr *)&ss, sl) != 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, "bind", err);
  }
  channel_t *ch = calloc(1, sizeof *ch);
  if (ch == NULL) {
    close(fd);
    napi_throw_error(env, NULL, "UdpChannel: out of memory");
    return NULL;
  }
  ch->env = env;
  ch->fd = fd;
  ch->family = family;
  pthread_mutex_init(&ch->mu, NULL);
  ch->poll.data = ch;
  if (napi_wrap(env, self, ch, finalize, NULL, NULL) != napi_ok) {
    close(fd);
    free(ch);
    napi_throw_error(env, NULL, "UdpChannel: wrap failed");
    return NULL;
  }
  return self;
}

static napi_value channel_port(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  channel_t *ch = unwrap_this(env, info, &argc, NULL);
  if (ch == NULL) return NULL;
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  if (ch->fd < 0 || getsockname(ch->fd, (struct sockaddr *)&ss, &sl) != 0) return throw_errno(env, "getsockname", errno ? errno : EBADF);
  int port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port) : ntohs(((struct sockaddr_in *)&ss)->sin_port);
  napi_value v;
  napi_create_int32(env, port, &v);
  return v;
}

static napi_value channel_connect(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  channel_t *ch = unwrap_this(env, info, &argc, argv);
  if (ch == NULL) return NULL;
  char address[64] = {0};
  size_t got = 0;
  int32_t port = -1;
  if (argc < 2 || napi_get_value_string_utf8(env, argv[0], address, sizeof address, &got) != napi_ok ||
      napi_get_value_int32(env, argv[1], &port) != napi_ok || port <= 0 || port > 65535) {
    napi_throw_type_error(env, NULL, "connect(address: string, port: number)");
    return NULL;
  }
  struct sockaddr_storage ss;
  socklen_t sl;
  if (parse_address(ch->family, address, port, &ss, &sl) != 0) {
    napi_throw_type_error(env, NULL, "connect: address is not an IP literal of the channel's family");
    return NULL;
  }
  if (ch->fd < 0) return throw_errno(env, "connect", EBADF);
  if (connect(ch->fd, (struct sockaddr *)&ss, sl) != 0) return throw_errno(env, "connect", errno);
  return NULL;
}

static napi_value channel_start(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  channel_t *ch = unwrap_this(env, info, &argc, argv);
  if (ch == NULL) return NULL;
  napi_valuetype t, t2;
  if (argc < 2 || napi_typeof(env, argv[0], &t) != napi_ok || t != napi_function || napi_typeof(env, argv[1], &t2) != napi_ok ||
      t2 != napi_function) {
    napi_throw_type_error(env, NULL, "start(onPacket: (packet: Buffer, lastSent: number) => void, onAdvance: (firstBlock: number) => void)");
    return NULL;
  }
  if (ch->polling || ch->closed) {
    napi_throw_error(env, NULL, "UdpChannel: already started or closed");
    return NULL;
  }
  napi_value self, name;
  napi_get_cb_info(env, info, NULL, NULL, &self, NULL);
  napi_create_string_utf8(env, "UdpChannel", NAPI_AUTO_LENGTH, &name);
  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) {
    napi_throw_error(env, NULL, "UdpChannel: no event loop");
    return NULL;
  }
  batcher_t *state = state_for(env, loop);
  if (state != NULL && state->pool != NULL) {
    ch->pool = state->pool;
    ch->member.fd = ch->fd;
    napi_create_reference(env, argv[0], 1, &ch->on_packet);
    napi_create_reference(env, argv[1], 1, &ch->on_advance);
    napi_create_reference(env, self, 1, &ch->self);
    napi_async_init(env, NULL, name, &ch->async);
    int added = nbdh_pool_add(ch->pool, &ch->member);
    if (added != 0) {
      ch->pool = NULL;
      ch->closed = 1;
      channel_released(ch);
      return throw_errno(env, "epoll_ctl", -added);
    }
    ch->polling = 1;
    return NULL;
  }
  int rc = uv_poll_init(loop, &ch->poll, ch->fd);
  if (rc != 0) {
    napi_throw_error(env, NULL, uv_strerror(rc));
    return NULL;
  }
  ch->poll.data = ch;
  ch->polling = 1;
  ch->batch = batcher_for(env, loop);
  napi_create_reference(env, argv[0], 1, &ch->on_packet);
  napi_create_reference(env, argv[1], 1, &ch->on_advance);
  napi_create_reference(env, self, 1, &ch->self);
  napi_async_init(env, NULL, name, &ch->async);
  rc = uv_poll_start(&ch->poll, UV_READABLE, on_readable);
  if (rc != 0) {
    ch->closed = 1;
    uv_close((uv_handle_t *)&ch->poll, on_closed);
    napi_throw_error(env, NULL, uv_strerror(rc));
  }
  return NULL;
}

static napi_value channel_send(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  channel_t *ch = unwrap_this(env, info, &argc, argv);
  if (ch == NULL) return NULL;
  void *data;
  size_t len;
  bool is_buffer = false;
  if (argc < 1 || napi_is_buffer(env, argv[0], &is_buffer) != napi_ok || !is_buffer ||
      napi_get_buffer_info(env, argv[0], &data, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "send(packet: Buffer)");
    return NULL;
  }
  int result = 0;
  if (ch->fd < 0 || ch->closed) result = -EBADF;
  else if (send(ch->fd, data, len, MSG_DONTWAIT) < 0) result = -errno;
  napi_value v;
  napi_create_int32(env, result, &v);
  return v;
}

/* Takes a Buffer and its stride as a chunk, with a reference. Throws and returns -1 on a bad argument. */
static int chunk_from_store(napi_env env, napi_value store, napi_value stride_value, int64_t first, chunk_t *c) {
  bool is_buffer = false;
  void *base;
  size_t size;
  int64_t stride = 0;
  if (napi_is_buffer(env, store, &is_buffer) != napi_ok || !is_buffer || napi_get_buffer_info(env, store, &base, &size) != napi_ok ||
      napi_get_value_int64(env, stride_value, &stride) != napi_ok || stride < 4 || stride > 65536 + 4 || size == 0) {
    napi_throw_type_error(env, NULL, "a chunk is a non-empty Buffer of packets and their stride (4..65540 bytes)");
    return -1;
  }
  memset(c, 0, sizeof *c);
  c->base = base;
  c->size = size;
  c->stride = (size_t)stride;
  c->count = (uint32_t)((size + (size_t)stride - 1) / (size_t)stride);
  c->first = first;
  /* The reference keeps the Buffer, and so every packet's memory, alive while the pump may send it. */
  napi_create_reference(env, store, 1, &c->ref);
  return 0;
}

static napi_value channel_arm(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  channel_t *ch = unwrap_this(env, info, &argc, argv);
  if (ch == NULL) return NULL;
  int64_t first = 0, last = 0, sent = 0;
  int32_t window = 1;
  napi_valuetype window_type = napi_undefined;
  if (argc >= 6) napi_typeof(env, argv[5], &window_type);
  if (argc < 5 || napi_get_value_int64(env, argv[2], &first) != napi_ok || napi_get_value_int64(env, argv[3], &last) != napi_ok ||
      napi_get_value_int64(env, argv[4], &sent) != napi_ok ||
      (window_type != napi_undefined && (napi_get_value_int32(env, argv[5], &window) != napi_ok || window < 1 || window > WINDOW_MAX))) {
    napi_throw_type_error(env, NULL,
                          "arm(store: Buffer, stride: number, firstBlock: number, lastBlock: number, lastSent: number, window?: 1..64)");
    return NULL;
  }
  chunk_t c;
  if (chunk_from_store(env, argv[0], argv[1], first, &c) != 0) return NULL;
  pthread_mutex_lock(&ch->mu);
  release_packets(ch);
  ch->cur = c;
  ch->last_block = last;
  ch->last_sent = sent;
  ch->window_first = sent;
  ch->window = (uint32_t)window;
  ch->armed = 1;
  pthread_mutex_unlock(&ch->mu);
  return NULL;
}

static napi_value channel_queue(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  channel_t *ch = unwrap_this(env, info, &argc, argv);
  if (ch == NULL) return NULL;
  int64_t first = 0;
  if (argc < 3 || napi_get_value_int64(env, argv[2], &first) != napi_ok) {
    napi_throw_type_error(env, NULL, "queue(store: Buffer, stride: number, firstBlock: number)");
    return NULL;
  }
  chunk_t c;
  if (chunk_from_store(env, argv[0], argv[1], first, &c) != 0) return NULL;
  pthread_mutex_lock(&ch->mu);
  chunk_release(env, &ch->next);
  ch->next = c;
  pthread_mutex_unlock(&ch->mu);
  return NULL;
}

static napi_value channel_disarm(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  channel_t *ch = unwrap_this(env, info, &argc, NULL);
  if (ch == NULL) return NULL;
  pthread_mutex_lock(&ch->mu);
  release_packets(ch);
  pthread_mutex_unlock(&ch->mu);
  return NULL;
}

static napi_value channel_pending(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  channel_t *ch = unwrap_this(env, info, &argc, NULL);
  if (ch == NULL) return NULL;
  int waiting = 0;
  if (ch->fd >= 0 && ioctl(ch->fd, FIONREAD, &waiting) != 0) waiting = 0;
  pthread_mutex_lock(&ch->mu);
  /* A pump thread read it, and the loop has not yet taken it: the client answered all the same. */
  if (ch->undelivered > 0) waiting = 1;
  pthread_mutex_unlock(&ch->mu);
  /* FIONREAD is the next datagram's length: a waiting empty datagram reads as 0, which is no answer. */
  napi_value v;
  napi_get_boolean(env, waiting > 0, &v);
  return v;
}

/* One of the pump's block numbers, read under the channel's lock (a pump thread may be moving it). */
static napi_value pump_block(napi_env env, napi_callback_info info, size_t offset) {
  size_t argc = 0;
  channel_t *ch = unwrap_this(env, info, &argc, NULL);
  if (ch == NULL) return NULL;
  pthread_mutex_lock(&ch->mu);
  int64_t block = *(const int64_t *)((const char *)ch + offset);
  pthread_mutex_unlock(&ch->mu);
  napi_value v;
  napi_create_int64(env, block, &v);
  return v;
}

static napi_value channel_last_sent(napi_env env, napi_callback_info info) {
  return pump_block(env, info, offsetof(channel_t, last_sent));
}

static napi_value channel_window_first(napi_env env, napi_callback_info info) {
  return pump_block(env, info, offsetof(channel_t, window_first));
}

static napi_value channel_last_progress(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  channel_t *ch = unwrap_this(env, info, &argc, NULL);
  if (ch == NULL) return NULL;
  pthread_mutex_lock(&ch->mu);
  double progress = ch->last_progress;
  pthread_mutex_unlock(&ch->mu);
  napi_value v;
  napi_create_double(env, progress, &v);
  return v;
}

static napi_value channel_close(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  channel_t *ch = unwrap_this(env, info, &argc, NULL);
  if (ch == NULL) return NULL;
  if (ch->closed) return NULL;
  pthread_mutex_lock(&ch->mu);
  ch->closed = 1;
  ch->armed = 0;
  pthread_mutex_unlock(&ch->mu);
  if (ch->pool != NULL && ch->polling) {
    /* The worker forgets the socket after its current batch; NBDH_EV_REMOVED then releases it here. */
    if (nbdh_pool_remove(ch->pool, &ch->member) != 0) napi_throw_error(env, NULL, "UdpChannel: out of memory");
  } else if (ch->polling) {
    uv_poll_stop(&ch->poll);
    uv_close((uv_handle_t *)&ch->poll, on_closed);
  } else if (ch->fd >= 0) {
    close(ch->fd);
    ch->fd = -1;
  }
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor methods[] = {
      {"port", NULL, channel_port, NULL, NULL, NULL, napi_default, NULL},
      {"connect", NULL, channel_connect, NULL, NULL, NULL, napi_default, NULL},
      {"start", NULL, channel_start, NULL, NULL, NULL, napi_default, NULL},
      {"send", NULL, channel_send, NULL, NULL, NULL, napi_default, NULL},
      {"arm", NULL, channel_arm, NULL, NULL, NULL, napi_default, NULL},
      {"queue", NULL, channel_queue, NULL, NULL, NULL, napi_default, NULL},
      {"disarm", NULL, channel_disarm, NULL, NULL, NULL, napi_default, NULL},
      {"lastSent", NULL, channel_last_sent, NULL, NULL, NULL, napi_default, NULL},
      {"windowFirst", NULL, channel_window_first, NULL, NULL, NULL, napi_default, NULL},
      {"pending", NULL, channel_pending, NULL, NULL, NULL, napi_default, NULL},
      {"lastProgress", NULL, channel_last_progress, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, channel_close, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_value cls;
  if (napi_define_class(env, "UdpChannel", NAPI_AUTO_LENGTH, channel_new, NULL, sizeof methods / sizeof methods[0], methods, &cls) != napi_ok)
    return NULL;
  napi_set_named_property(env, exports, "UdpChannel", cls);
  napi_value fn;
  if (napi_create_function(env, "batching", NAPI_AUTO_LENGTH, batching, NULL, &fn) == napi_ok)
    napi_set_named_property(env, exports, "batching", fn);
  if (napi_create_function(env, "usePumpThreads", NAPI_AUTO_LENGTH, use_pump_threads, NULL, &fn) == napi_ok)
    napi_set_named_property(env, exports, "usePumpThreads", fn);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
