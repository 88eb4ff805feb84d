/*
 * nbdh_pool: threads that wait on sockets (one epoll each) and answer what they can by themselves, and a
 * queue back to the Node loop for what they cannot.
 *
 * Why: a lockstep TFTP block costs one datagram in and one out, and on the loop's one thread every
 * transfer's blocks queue behind each other and behind JS. Here each socket belongs to one worker: the
 * worker's `ready` hook runs on that worker with every socket one epoll_wait found readable (so it can
 * batch their reads and sends), and posts events (a datagram for JS, a chunk moved past) that the loop
 * dispatches in the order they were posted. Each worker may keep state of its own (`local`, an io_uring).
 *
 *   nbdh_pool_create(loop, threads, hooks)             threads started, an async handle on the loop
 *   nbdh_pool_add(pool, fd, owner)                     owner's socket joins the least loaded worker
 *   nbdh_pool_remove(pool, owner)                      the worker forgets the socket, then posts
 *                                                      NBDH_EV_REMOVED: only then may owner be freed
 *   nbdh_pool_post(pool, event)                        from a worker: dispatched on the loop
 *   nbdh_pool_destroy(pool)                            joins the workers (the loop's environment ends)
 *
 * The owner's own lock guards its state between its worker and the loop; the pool only moves pointers.
 */
#ifndef NBDH_POOL_H
#define NBDH_POOL_H

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <uv.h>

#define NBDH_POOL_MAX_THREADS 64
#define NBDH_POOL_EVENTS 256

enum { NBDH_EV_REMOVED = -1 };

typedef struct nbdh_event {
  struct nbdh_event *next;
  void *owner;
  int kind; /* NBDH_EV_REMOVED, or the owner's own kinds (>= 0) */
  int64_t value;
  void *data; /* malloc'd by the poster; the dispatcher frees it */
  size_t len;
} nbdh_event_t;

struct nbdh_pool;

typedef struct {
  struct nbdh_pool *pool;
  pthread_t thread;
  int epfd, wakefd;
  int load; /* sockets owned (changed on the loop only) */
  void *local; /* the hooks' per-worker state */
  /* owners to forget, guarded by the pool's lock */
  void **removing;
  size_t nremoving, capremoving;
} nbdh_worker_t;

/* The owner's handle in the pool: the owner embeds it and hands the pool a pointer to it. */
typedef struct {
  int fd;
  int worker;
} nbdh_member_t;

typedef struct {
  /* On a worker: the members one epoll_wait found readable. */
  void (*ready)(void **members, int count, void *local);
  /* On the loop: one posted event (its data is freed after). */
  void (*dispatch)(nbdh_event_t *ev);
  /* On the worker, at its start and end (both optional). */
  void *(*local_init)(void);
  void (*local_free)(void *local);
} nbdh_pool_hooks_t;

typedef struct nbdh_pool {
  uv_async_t async;
  pthread_mutex_t lock;
  nbdh_event_t *head, *tail;
  nbdh_pool_hooks_t hooks;
  int stopping;
  int threads;
  nbdh_worker_t workers[NBDH_POOL_MAX_THREADS];
} nbdh_pool_t;

static inline void nbdh_pool_post(nbdh_pool_t *p, nbdh_event_t *ev) {
  ev->next = NULL;
  pthread_mutex_lock(&p->lock);
  int was_empty = p->head == NULL;
  if (p->tail) p->tail->next = ev;
  else p->head = ev;
  p->tail = ev;
  pthread_mutex_unlock(&p->lock);
  /* One wake-up per batch: uv_async_send coalesces, and an empty queue is the only one that needs it. */
  if (was_empty) uv_async_send(&p->async);
}

static inline void nbdh_pool_on_async(uv_async_t *handle) {
  nbdh_pool_t *p = (nbdh_pool_t *)handle->data;
  pthread_mutex_lock(&p->lock);
  nbdh_event_t *ev = p->head;
  p->head = p->tail = NULL;
  pthread_mutex_unlock(&p->lock);
  while (ev != NULL) {
    nbdh_event_t *next = ev->next;
    p->hooks.dispatch(ev);
    free(ev->data);
    free(ev);
    ev = next;
  }
}

static inline void *nbdh_pool_worker_main(void *arg) {
  nbdh_worker_t *w = (nbdh_worker_t *)arg;
  nbdh_pool_t *p = w->pool;
  struct epoll_event events[NBDH_POOL_EVENTS];
  void *members[NBDH_POOL_EVENTS];
  pthread_setname_np(pthread_self(), "nbdh-pump"); /* so per-thread CPU (top -H, /proc) names it */
  if (p->hooks.local_init) w->local = p->hooks.local_init();
  for (;;) {
    int n = epoll_wait(w->epfd, events, NBDH_POOL_EVENTS, -1);
    if (n < 0 && errno != EINTR) break;
    int ready = 0;
    for (int i = 0; i < n; i++) {
      if (events[i].data.ptr == NULL) {
        uint64_t v;
        (void)!read(w->wakefd, &v, sizeof v);
        continue;
      }
      members[ready++] = events[i].data.ptr;
    }
    if (ready > 0) p->hooks.ready(members, ready, w->local);
    /* After the batch: no event of this epoll_wait still names a socket forgotten here. */
    pthread_mutex_lock(&p->lock);
    int stop = p->stopping;
    size_t k = w->nremoving;
    void **gone = NULL;
    if (k > 0) {
      gone = w->removing;
      w->removing = NULL;
      w->nremoving = w->capremoving = 0;
    }
    pthread_mutex_unlock(&p->lock);
    for (size_t i = 0; i < k; i++) {
      nbdh_member_t *m = (nbdh_member_t *)gone[i];
      (void)epoll_ctl(w->epfd, EPOLL_CTL_DEL, m->fd, NULL);
      nbdh_event_t *ev = calloc(1, sizeof *ev);
      if (ev == NULL) continue; /* the owner leaks rather than being freed under a worker */
      ev->owner = gone[i];
      ev->kind = NBDH_EV_REMOVED;
      nbdh_pool_post(p, ev);
    }
    free(gone);
    if (stop) break;
  }
  if (p->hooks.local_free) p->hooks.local_free(w->local);
  return NULL;
}

static inline void nbdh_pool_wake(nbdh_worker_t *w) {
  uint64_t one = 1;
  (void)!write(w->wakefd, &one, sizeof one);
}

/* Returns NULL when threads cannot be had (then the caller serves on the loop). */
static inline nbdh_pool_t *nbdh_pool_create(uv_loop_t *loop, int threads, nbdh_pool_hooks_t hooks) {
  if (threads < 1) return NULL;
  if (threads > NBDH_POOL_MAX_THREADS) threads = NBDH_POOL_MAX_THREADS;
  nbdh_pool_t *p = calloc(1, sizeof *p);
  if (p == NULL) return NULL;
  p->hooks = hooks;
  pthread_mutex_init(&p->lock, NULL);
  if (uv_async_init(loop, &p->async, nbdh_pool_on_async) != 0) {
    free(p);
    return NULL;
  }
  p->async.data = p;
  uv_unref((uv_handle_t *)&p->async); /* never keeps the process alive by itself */
  for (int i = 0; i < threads; i++) {
    nbdh_worker_t *w = &p->workers[i];
    w->pool = p;
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    w->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (w->epfd < 0 || w->wakefd < 0 || epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->wakefd, &ev) != 0 ||
        pthread_create(&w->thread, NULL, nbdh_pool_worker_main, w) != 0) {
      if (w->epfd >= 0) close(w->epfd);
      if (w->wakefd >= 0) close(w->wakefd);
      break;
    }
    p->threads = i + 1;
  }
  if (p->threads == 0) {
    uv_close((uv_handle_t *)&p->async, NULL);
    return NULL; /* the handle's memory is leaked with p: uv_close needs it until the loop runs */
  }
  return p;
}

/* Registers the member's socket with the least loaded worker. Returns 0 or -errno. */
static inline int nbdh_pool_add(nbdh_pool_t *p, nbdh_member_t *m) {
  int best = 0;
  for (int i = 1; i < p->threads; i++)
    if (p->workers[i].load < p->workers[best].load) best = i;
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = m};
  if (epoll_ctl(p->workers[best].epfd, EPOLL_CTL_ADD, m->fd, &ev) != 0) return -errno;
  m->worker = best;
  p->workers[best].load++;
  return 0;
}

/* Asks the member's worker to forget it; NBDH_EV_REMOVED follows on the loop. Returns 0 or -ENOMEM. */
static inline int nbdh_pool_remove(nbdh_pool_t *p, nbdh_member_t *m) {
  nbdh_worker_t *w = &p->workers[m->worker];
  pthread_mutex_lock(&p->lock);
  if (w->nremoving == w->capremoving) {
    size_t cap = w->capremoving ? w->capremoving * 2 : 16;
    void **grown = realloc(w->removing, cap * sizeof *grown);
    if (grown == NULL) {
      pthread_mutex_unlock(&p->lock);
      return -ENOMEM;
    }
    w->removing = grown;
    w->capremoving = cap;
  }
  w->removing[w->nremoving++] = m;
  pthread_mutex_unlock(&p->lock);
  w->load--;
  nbdh_pool_wake(w);
  return 0;
}

/* Stops and joins the workers; events not yet dispatched are dropped (the environment is ending). */
static inline void nbdh_pool_destroy(nbdh_pool_t *p) {
  pthread_mutex_lock(&p->lock);
  p->stopping = 1;
  pthread_mutex_unlock(&p->lock);
  for (int i = 0; i < p->threads; i++) {
    nbdh_pool_wake(&p->workers[i]);
    pthread_join(p->workers[i].thread, NULL);
    close(p->workers[i].epfd);
    close(p->workers[i].wakefd);
    free(p->workers[i].removing);
  }
  for (nbdh_event_t *ev = p->head; ev != NULL;) {
    nbdh_event_t *next = ev->next;
    free(ev->data);
    free(ev);
    ev = next;
  }
  p->head = p->tail = NULL;
  uv_close((uv_handle_t *)&p->async, (uv_close_cb)free);
}

#endif
