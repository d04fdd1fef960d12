/*
 * The few system calls vdiskfs needs that Node does not offer (see
 * docs/fuse-notes.md). The protocol itself is spoken in TypeScript (src/fuse/); this file only
 * moves bytes and descriptors:
 *
 *   read(fd, buf)             one read(2); bytes, or -errno (never throws: EAGAIN is routine)
 *   write(fd, buf)            one write(2); bytes, or -errno
 *   preadNowait(fd, buf, pos) preadv2(RWF_NOWAIT): bytes if the page cache holds them, else -EAGAIN
 *   fallocate(fd, mode, offset, length)  0, or -errno (punching holes in flat images)
 *   watch(fd, callback)       calls callback() on the JS thread whenever fd is readable (uv_poll,
 *                             level-triggered); returns a handle for unwatch(handle)
 *   socketpair(seqpacket)     [fd, fd] of an AF_UNIX pair: stream (fusermount3's _FUSE_COMMFD),
 *                             or seqpacket (message boundaries, as /dev/fuse has: channel tests)
 *   receiveFd(fd)             the descriptor sent over a Unix socket with SCM_RIGHTS, or -errno
 *   setNonblocking(fd)        0, or -errno (a descriptor received that way arrives blocking)
 *
 * Waking the JS thread straight from epoll when /dev/fuse has a request, instead of from a
 * thread-pool read, is what removes two thread switches from every request.
 */
#include <node_api.h>
#include <uv.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define CHECK(call)                                                   \
  do {                                                                \
    if ((call) != napi_ok) {                                          \
      napi_throw_error(env, NULL, "vdiskfs_sys: " #call " failed");      \
      return NULL;                                                    \
    }                                                                 \
  } while (0)

static napi_value int_value(napi_env env, int64_t v) {
  napi_value out;
  napi_create_int64(env, v, &out);
  return out;
}

static int args(napi_env env, napi_callback_info info, size_t want, napi_value* argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < want) {
    napi_throw_type_error(env, NULL, "vdiskfs_sys: missing arguments");
    return 0;
  }
  return 1;
}

static int buffer_of(napi_env env, napi_value v, void** data, size_t* len) {
  bool is_typed;
  napi_typedarray_type type;
  napi_value ab;
  size_t offset;
  if (napi_is_typedarray(env, v, &is_typed) != napi_ok || !is_typed ||
      napi_get_typedarray_info(env, v, &type, len, data, &ab, &offset) != napi_ok || type != napi_uint8_array) {
    napi_throw_type_error(env, NULL, "vdiskfs_sys: expected a Buffer or Uint8Array");
    return 0;
  }
  return 1;
}

/* read(2) or write(2) of the whole buffer, once; bytes, or -errno. */
static napi_value transfer(napi_env env, napi_callback_info info, int writing) {
  napi_value argv[2];
  int32_t fd;
  void* data;
  size_t len;
  if (!args(env, info, 2, argv)) return NULL;
  CHECK(napi_get_value_int32(env, argv[0], &fd));
  if (!buffer_of(env, argv[1], &data, &len)) return NULL;
  ssize_t n;
  do n = writing ? write(fd, data, len) : read(fd, data, len); while (n < 0 && errno == EINTR);
  return int_value(env, n < 0 ? -errno : n);
}

static napi_value Read(napi_env env, napi_callback_info info) { return transfer(env, info, 0); }
static napi_value Write(napi_env env, napi_callback_info info) { return transfer(env, info, 1); }

static napi_value PreadNowait(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t fd;
  int64_t pos;
  struct iovec iov;
  if (!args(env, info, 3, argv)) return NULL;
  CHECK(napi_get_value_int32(env, argv[0], &fd));
  if (!buffer_of(env, argv[1], &iov.iov_base, &iov.iov_len)) return NULL;
  CHECK(napi_get_value_int64(env, argv[2], &pos));
  ssize_t n;
  do n = preadv2(fd, &iov, 1, pos, RWF_NOWAIT); while (n < 0 && errno == EINTR);
  return int_value(env, n < 0 ? -errno : n);
}

static napi_value Fallocate(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int32_t fd, mode;
  int64_t offset, length;
  if (!args(env, info, 4, argv)) return NULL;
  CHECK(napi_get_value_int32(env, argv[0], &fd));
  CHECK(napi_get_value_int32(env, argv[1], &mode));
  CHECK(napi_get_value_int64(env, argv[2], &offset));
  CHECK(napi_get_value_int64(env, argv[3], &length));
  int rc;
  do rc = fallocate(fd, mode, offset, length); while (rc < 0 && errno == EINTR);
  return int_value(env, rc < 0 ? -errno : 0);
}

typedef struct {
  uv_poll_t poll;
  napi_env env;
  napi_ref callback;
  napi_async_context context;
  int closed;
} Watch;

static void on_closed(uv_handle_t* h) {
  free(h->data);
}

static void on_readable(uv_poll_t* h, int status, int events) {
  Watch* w = h->data;
  if (w->closed) return;
  napi_env env = w->env;
  napi_handle_scope scope;
  napi_value callback, recv, result, arg;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_get_reference_value(env, w->callback, &callback);
  napi_get_global(env, &recv);
  napi_create_int32(env, status, &arg);
  /* make_callback, not call_function: promise jobs queued by the handlers run when it returns. */
  if (napi_make_callback(env, w->context, recv, callback, 1, &arg, &result) == napi_pending_exception) {
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);
  }
  napi_close_handle_scope(env, scope);
}

static napi_value WatchFd(napi_env env, napi_callback_info info) {
  napi_value argv[2], name, handle;
  int32_t fd;
  uv_loop_t* loop;
  if (!args(env, info, 2, argv)) return NULL;
  CHECK(napi_get_value_int32(env, argv[0], &fd));
  Watch* w = calloc(1, sizeof(Watch));
  if (!w) {
    napi_throw_error(env, NULL, "vdiskfs_sys: out of memory");
    return NULL;
  }
  w->env = env;
  CHECK(napi_create_reference(env, argv[1], 1, &w->callback));
  CHECK(napi_create_string_utf8(env, "vdiskfs:fuse", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_async_init(env, NULL, name, &w->context));
  CHECK(napi_get_uv_event_loop(env, &loop));
  int rc = uv_poll_init(loop, &w->poll, fd);
  if (rc == 0) rc = uv_poll_start(&w->poll, UV_READABLE, on_readable);
  if (rc != 0) {
    napi_throw_error(env, NULL, uv_strerror(rc));
    return NULL;
  }
  w->poll.data = w;
  CHECK(napi_create_external(env, w, NULL, NULL, &handle));
  return handle;
}

static napi_value Unwatch(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  Watch* w;
  if (!args(env, info, 1, argv)) return NULL;
  CHECK(napi_get_value_external(env, argv[0], (void**)&w));
  if (w->closed) return NULL;
  w->closed = 1;
  uv_poll_stop(&w->poll);
  napi_delete_reference(env, w->callback);
  napi_async_destroy(env, w->context);
  uv_close((uv_handle_t*)&w->poll, on_closed);
  return NULL;
}

static napi_value SocketPair(napi_env env, napi_callback_info info) {
  int sv[2];
  size_t argc = 1;
  napi_value argv[1], out;
  bool seqpacket = false;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc >= 1) napi_get_value_bool(env, argv[0], &seqpacket);
  if (socketpair(AF_UNIX, (seqpacket ? SOCK_SEQPACKET : SOCK_STREAM) | SOCK_CLOEXEC, 0, sv) != 0) {
    napi_throw_error(env, NULL, strerror(errno));
    return NULL;
  }
  CHECK(napi_create_array_with_length(env, 2, &out));
  CHECK(napi_set_element(env, out, 0, int_value(env, sv[0])));
  CHECK(napi_set_element(env, out, 1, int_value(env, sv[1])));
  return out;
}

static napi_value ReceiveFd(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t sock;
  if (!args(env, info, 1, argv)) return NULL;
  CHECK(napi_get_value_int32(env, argv[0], &sock));
  char byte;
  struct iovec iov = { &byte, 1 };
  union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int))]; } control;
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.buf;
  msg.msg_controllen = sizeof control.buf;
  ssize_t n;
  do n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC); while (n < 0 && errno == EINTR);
  if (n < 0) return int_value(env, -errno);
  struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
  if (n == 0 || !c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) return int_value(env, -EPROTO);
  int fd;
  memcpy(&fd, CMSG_DATA(c), sizeof fd);
  return int_value(env, fd);
}

static napi_value SetNonblocking(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  if (!args(env, info, 1, argv)) return NULL;
  CHECK(napi_get_value_int32(env, argv[0], &fd));
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return int_value(env, -errno);
  return int_value(env, 0);
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "read", NULL, Read, NULL, NULL, NULL, napi_default, NULL },
    { "write", NULL, Write, NULL, NULL, NULL, napi_default, NULL },
    { "preadNowait", NULL, PreadNowait, NULL, NULL, NULL, napi_default, NULL },
    { "fallocate", NULL, Fallocate, NULL, NULL, NULL, napi_default, NULL },
    { "watch", NULL, WatchFd, NULL, NULL, NULL, napi_default, NULL },
    { "unwatch", NULL, Unwatch, NULL, NULL, NULL, napi_default, NULL },
    { "socketpair", NULL, SocketPair, NULL, NULL, NULL, napi_default, NULL },
    { "setNonblocking", NULL, SetNonblocking, NULL, NULL, NULL, napi_default, NULL },
    { "receiveFd", NULL, ReceiveFd, NULL, NULL, NULL, napi_default, NULL },
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
