/*
 * nbdh_ring: the least of io_uring that the TFTP pump needs, on the raw system calls (no liburing, so
 * the addon builds and runs wherever the kernel headers are): one ring, RECV and SEND entries, submit and
 * wait, reap. One thread owns a ring (the loop's), so the only ordering needed is with the kernel.
 */
#ifndef NBDH_RING_H
#define NBDH_RING_H

#include <errno.h>
#include <linux/io_uring.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef struct {
  int fd;
  unsigned *sq_head, *sq_tail, *sq_mask, *sq_array;
  unsigned *cq_head, *cq_tail, *cq_mask;
  struct io_uring_sqe *sqes;
  struct io_uring_cqe *cqes;
  unsigned sq_entries;
  /* Entries filled since the last submit. */
  unsigned unsubmitted;
  void *sq_map, *cq_map;
  size_t sq_map_len, cq_map_len, sqes_len;
} nbdh_ring_t;

static inline void nbdh_ring_free(nbdh_ring_t *r) {
  if (r->sqes) munmap(r->sqes, r->sqes_len);
  if (r->cq_map && r->cq_map != r->sq_map) munmap(r->cq_map, r->cq_map_len);
  if (r->sq_map) munmap(r->sq_map, r->sq_map_len);
  if (r->fd >= 0) close(r->fd);
  memset(r, 0, sizeof *r);
  r->fd = -1;
}

/* 0, or -errno (ENOSYS, EPERM where io_uring is off: the caller then goes without). */
static inline int nbdh_ring_init(nbdh_ring_t *r, unsigned entries) {
  memset(r, 0, sizeof *r);
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  /* SUBMIT_ALL: one bad entry does not hold back the rest of the batch (5.18+; retried without). */
  p.flags = IORING_SETUP_SUBMIT_ALL;
  int fd = (int)syscall(__NR_io_uring_setup, entries, &p);
  if (fd < 0 && errno == EINVAL) {
    memset(&p, 0, sizeof p);
    fd = (int)syscall(__NR_io_uring_setup, entries, &p);
  }
  if (fd < 0) {
    r->fd = -1;
    return -errno;
  }
  r->fd = fd;
  r->sq_map_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  r->cq_map_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
  int single = (p.features & IORING_FEAT_SINGLE_MMAP) != 0;
  if (single) {
    if (r->cq_map_len > r->sq_map_len) r->sq_map_len = r->cq_map_len;
    r->cq_map_len = r->sq_map_len;
  }
  r->sq_map = mmap(NULL, r->sq_map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
  if (r->sq_map == MAP_FAILED) {
    r->sq_map = NULL;
    int err = errno;
    nbdh_ring_free(r);
    return -err;
  }
  r->cq_map = single ? r->sq_map
                     : mmap(NULL, r->cq_map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_CQ_RING);
  if (r->cq_map == MAP_FAILED) {
    r->cq_map = NULL;
    int err = errno;
    nbdh_ring_free(r);
    return -err;
  }
  r->sqes_len = p.sq_entries * sizeof(struct io_uring_sqe);
  r->sqes = mmap(NULL, r->sqes_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
  if (r->sqes == MAP_FAILED) {
    r->sqes = NULL;
    int err = errno;
    nbdh_ring_free(r);
    return -err;
  }
  uint8_t *sq = r->sq_map, *cq = r->cq_map;
  r->sq_head = (unsigned *)(sq + p.sq_off.head);
  r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
  r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
  r->sq_array = (unsigned *)(sq + p.sq_off.array);
  r->cq_head = (unsigned *)(cq + p.cq_off.head);
  r->cq_tail = (unsigned *)(cq + p.cq_off.tail);
  r->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
  r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
  r->sq_entries = p.sq_entries;
  return 0;
}

/* The next free entry, zeroed, or NULL when the ring is full (submit first). */
static inline struct io_uring_sqe *nbdh_ring_sqe(nbdh_ring_t *r) {
  unsigned head = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
  unsigned tail = *r->sq_tail + r->unsubmitted;
  if (tail - head >= r->sq_entries) return NULL;
  unsigned idx = tail & *r->sq_mask;
  r->sq_array[idx] = idx;
  r->unsubmitted++;
  struct io_uring_sqe *sqe = &r->sqes[idx];
  memset(sqe, 0, sizeof *sqe);
  return sqe;
}

static inline void nbdh_ring_prep(struct io_uring_sqe *sqe, int op, int fd, const void *buf, size_t len, int flags,
                                  uint64_t user_data) {
  sqe->opcode = (uint8_t)op;
  sqe->fd = fd;
  sqe->addr = (uint64_t)(uintptr_t)buf;
  sqe->len = (uint32_t)len;
  sqe->msg_flags = (uint32_t)flags;
  sqe->user_data = user_data;
}

/* Submits what was filled and waits until `wait` completions are there. Returns entries submitted or -errno. */
static inline int nbdh_ring_submit(nbdh_ring_t *r, unsigned wait) {
  unsigned n = r->unsubmitted;
  __atomic_store_n(r->sq_tail, *r->sq_tail + n, __ATOMIC_RELEASE);
  r->unsubmitted = 0;
  for (;;) {
    int rc = (int)syscall(__NR_io_uring_enter, r->fd, n, wait, wait ? IORING_ENTER_GETEVENTS : 0, NULL, 0);
    if (rc >= 0) return rc;
    if (errno != EINTR) return -errno;
    n = 0; /* already taken: only wait again */
  }
}

/* Calls fn(user_data, res, ctx) for each completion there is; returns how many. */
static inline unsigned nbdh_ring_reap(nbdh_ring_t *r, void (*fn)(uint64_t, int32_t, void *), void *ctx) {
  unsigned head = *r->cq_head, tail = __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE), n = 0;
  while (head != tail) {
    struct io_uring_cqe *cqe = &r->cqes[head & *r->cq_mask];
    fn(cqe->user_data, cqe->res, ctx);
    head++;
    n++;
  }
  __atomic_store_n(r->cq_head, head, __ATOMIC_RELEASE);
  return n;
}

#endif
