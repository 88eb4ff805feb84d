/*
 * nbdh_file: a positional read of file bytes into fixed-size records (TFTP DATA packets: a 4-byte header,
 * then the block) that takes only what the page cache already holds, on the calling thread.
 *
 * Why: a transfer reads its file 128 KiB at a time, and through fs.readv each read is a trip through
 * libuv's threadpool (queue, wake a worker, read, wake the loop) and one JS Buffer per block for the
 * iovec. In a boot storm every machine reads the same kernel and initrd, which sit in the page cache,
 * so the read is a memcpy that costs less than the trip. preadv2(RWF_NOWAIT) does it here and stops
 * where it would have to wait for the disk; the caller reads the rest through the threadpool as before.
 *
 *   readRecordsCached(fd, store, header, stride, offset) -> bytes placed (0..)
 *     store holds records every `stride` bytes (the last may be shorter); each record's bytes after its
 *     first `header` bytes are filled, in order, from the file at `offset`. Stops short at the end of
 *     the file, where the bytes are not cached (EAGAIN), and at any error (EOPNOTSUPP where RWF_NOWAIT
 *     is not supported, EPERM from a seccomp filter, EIO): the count says how far it got, and the
 *     caller's threadpool read takes over from there and reports a real error itself.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <node_api.h>
#include <stdint.h>
#include <sys/uio.h>

#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008
#endif

/* iovecs per preadv2 call (IOV_MAX is 1024 on Linux). */
#define RECORDS_PER_CALL 1024

static int64_t read_records(int fd, uint8_t *store, size_t size, size_t header, size_t stride, int64_t offset) {
  struct iovec iov[RECORDS_PER_CALL];
  int64_t placed = 0;
  size_t pos = 0;
  while (pos < size) {
    int n = 0;
    size_t want = 0;
    for (; n < RECORDS_PER_CALL && pos < size; n++, pos += stride) {
      size_t end = pos + stride < size ? pos + stride : size;
      size_t body = end - pos > header ? end - pos - header : 0;
      iov[n].iov_base = store + pos + header;
      iov[n].iov_len = body;
      want += body;
    }
    if (want == 0) continue;
    ssize_t got;
    do got = preadv2(fd, iov, n, offset + placed, RWF_NOWAIT);
    while (got < 0 && errno == EINTR);
    if (got < 0) return placed;
    placed += got;
    if ((size_t)got < want) return placed; /* end of file, or the rest is not cached */
  }
  return placed;
}

static napi_value read_records_cached(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd = -1, header = -1, stride = 0;
  int64_t offset = -1;
  bool is_buffer = false;
  void *store = NULL;
  size_t size = 0;
  if (argc < 5 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0 ||
      napi_is_buffer(env, argv[1], &is_buffer) != napi_ok || !is_buffer ||
      napi_get_buffer_info(env, argv[1], &store, &size) != napi_ok ||
      napi_get_value_int32(env, argv[2], &header) != napi_ok || header < 0 ||
      napi_get_value_int32(env, argv[3], &stride) != napi_ok || stride <= header ||
      napi_get_value_int64(env, argv[4], &offset) != napi_ok || offset < 0) {
    napi_throw_type_error(env, NULL,
                          "readRecordsCached(fd: number, store: Buffer, header: number, stride: number > header, offset: number)");
    return NULL;
  }
  int64_t placed = read_records(fd, store, size, (size_t)header, (size_t)stride, offset);
  napi_value v;
  napi_create_int64(env, placed, &v);
  return v;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  if (napi_create_function(env, "readRecordsCached", NAPI_AUTO_LENGTH, read_records_cached, NULL, &fn) == napi_ok)
    napi_set_named_property(env, exports, "readRecordsCached", fn);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
