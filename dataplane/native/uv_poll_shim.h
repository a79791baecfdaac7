// The few libuv calls the addon's event-loop readers need (uv_poll on a socket or the TUN
// fd), bound like the EVP ones to the Node binary's own exports: there are no libuv headers
// to build against. The handle is opaque: a box far larger than libuv 1.x's uv_poll_t
// (about 160 bytes on 64-bit Linux), whose first bytes libuv owns; the owner's pointer back
// sits after them.
#ifndef EDGEMESH_UV_POLL_SHIM_H
#define EDGEMESH_UV_POLL_SHIM_H
typedef struct uv_loop_s uv_loop_t;
typedef void (*em_uv_poll_cb)(void *handle, int status, int events);
typedef void (*em_uv_close_cb)(void *handle);
extern int uv_poll_init(uv_loop_t *loop, void *handle, int fd);
extern int uv_poll_start(void *handle, int events, em_uv_poll_cb cb);
extern int uv_poll_stop(void *handle);
extern void uv_close(void *handle, em_uv_close_cb cb);
extern void uv_unref(void *handle);
#define EM_UV_READABLE 1
#define EM_UV_HANDLE_BYTES 512
#endif
