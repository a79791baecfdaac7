// edgemesh: the CNI executable the container runtime runs (installed as /opt/cni/bin/edgemesh).
// It is a thin client of the edgemesh agent, which does the actual work (thick plugin): it
// forwards the CNI_* environment and the network configuration on stdin over a unix socket
// and prints the agent's reply with the agent's exit code. Static C, so it runs on any host,
// with or without Node.js, and adds well under a millisecond to every pod start.
//
// Wire format (see cni/wire.ts), one request per connection:
//   request: u32 big-endian length + JSON {"env":{"CNI_COMMAND":"ADD",...},"stdin":"..."}
//   reply:   u32 big-endian length + JSON {"exitCode":0,"stdout":"...","stderr":"..."}
// Socket path: network config field "socket", else $EDGEMESH_CNI_SOCKET, else the default.
// VERSION is answered here, so it works while the agent is down. Agent unreachable or no
// reply: CNI error 11 ("try again later") on stdout, exit code 1.
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_SOCKET "/run/edgemesh/cni.sock"
#define MAX_STDIN (1024 * 1024)        /* the agent refuses larger requests too */
#define MAX_REPLY (16 * 1024 * 1024)
#define REPLY_TIMEOUT_SEC 240          /* runtimes give a CNI call minutes, not hours */
#define LATEST_VERSION "1.1.0"

extern char **environ;

static const char *const SUPPORTED[] = {"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0", NULL};

/* ---------- growable buffer ---------- */
typedef struct {
  char *data;
  size_t len, cap;
} buf_t;

static void buf_reserve(buf_t *b, size_t extra) {
  if (b->len + extra + 1 <= b->cap) return;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < b->len + extra + 1) cap *= 2;
  char *p = realloc(b->data, cap);
  if (!p) {
    fputs("edgemesh: out of memory\n", stderr);
    exit(1);
  }
  b->data = p;
  b->cap = cap;
}
static void buf_put(buf_t *b, const char *s, size_t n) {
  buf_reserve(b, n);
  memcpy(b->data + b->len, s, n);
  b->len += n;
  b->data[b->len] = '\0';
}
static void buf_puts(buf_t *b, const char *s) { buf_put(b, s, strlen(s)); }
static void buf_putc(buf_t *b, char c) { buf_put(b, &c, 1); }

static void buf_json_string(buf_t *b, const char *s, size_t n) {
  buf_putc(b, '"');
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      buf_putc(b, '\\');
      buf_putc(b, (char)c);
    } else if (c < 0x20) {
      char esc[8];
      snprintf(esc, sizeof esc, "\\u%04x", c);
      buf_puts(b, esc);
    } else {
      buf_putc(b, (char)c);
    }
  }
  buf_putc(b, '"');
}

/* ---------- minimal JSON reading: top-level keys of an object ---------- */
static const char *skip_ws(const char *p, const char *end) {
  while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
  return p;
}

static void put_utf8(buf_t *out, uint32_t cp) {
  char u[4];
  if (cp < 0x80) {
    u[0] = (char)cp;
    buf_put(out, u, 1);
  } else if (cp < 0x800) {
    u[0] = (char)(0xC0 | (cp >> 6));
    u[1] = (char)(0x80 | (cp & 0x3F));
    buf_put(out, u, 2);
  } else if (cp < 0x10000) {
    u[0] = (char)(0xE0 | (cp >> 12));
    u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    u[2] = (char)(0x80 | (cp & 0x3F));
    buf_put(out, u, 3);
  } else {
    u[0] = (char)(0xF0 | (cp >> 18));
    u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    u[3] = (char)(0x80 | (cp & 0x3F));
    buf_put(out, u, 4);
  }
}

static int hex4(const char *p, const char *end, uint32_t *v) {
  if (end - p < 4) return -1;
  *v = 0;
  for (int i = 0; i < 4; i++) {
    char c = p[i];
    *v <<= 4;
    if (c >= '0' && c <= '9') *v |= (uint32_t)(c - '0');
    else if (c >= 'a' && c <= 'f') *v |= (uint32_t)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') *v |= (uint32_t)(c - 'A' + 10);
    else return -1;
  }
  return 0;
}

/* Parses a JSON string at p (which points at '"'); decodes into out when out is not NULL.
   Returns the position after the closing quote, or NULL when malformed. */
static const char *parse_string(const char *p, const char *end, buf_t *out) {
  if (p >= end || *p != '"') return NULL;
  p++;
  while (p < end) {
    char c = *p++;
    if (c == '"') return p;
    if (c != '\\') {
      if (out) buf_putc(out, c);
      continue;
    }
    if (p >= end) return NULL;
    char e = *p++;
    char lit;
    switch (e) {
      case '"': lit = '"'; break;
      case '\\': lit = '\\'; break;
      case '/': lit = '/'; break;
      case 'b': lit = '\b'; break;
      case 'f': lit = '\f'; break;
      case 'n': lit = '\n'; break;
      case 'r': lit = '\r'; break;
      case 't': lit = '\t'; break;
      case 'u': {
        uint32_t cp, lo;
        if (hex4(p, end, &cp) < 0) return NULL;
        p += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF && end - p >= 6 && p[0] == '\\' && p[1] == 'u' &&
            hex4(p + 2, end, &lo) == 0 && lo >= 0xDC00 && lo <= 0xDFFF) {
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          p += 6;
        }
        if (out) put_utf8(out, cp);
        continue;
      }
      default: return NULL;
    }
    if (out) buf_putc(out, lit);
  }
  return NULL;
}

static const char *skip_value(const char *p, const char *end, int depth) {
  p = skip_ws(p, end);
  if (p >= end || depth > 64) return NULL;
  if (*p == '"') return parse_string(p, end, NULL);
  if (*p == '{' || *p == '[') {
    char close = *p == '{' ? '}' : ']';
    p = skip_ws(p + 1, end);
    if (p < end && *p == close) return p + 1;
    for (;;) {
      if (close == '}') {
        p = parse_string(skip_ws(p, end), end, NULL);
        if (!p) return NULL;
        p = skip_ws(p, end);
        if (p >= end || *p != ':') return NULL;
        p++;
      }
      p = skip_value(p, end, depth + 1);
      if (!p) return NULL;
      p = skip_ws(p, end);
      if (p >= end) return NULL;
      if (*p == close) return p + 1;
      if (*p != ',') return NULL;
      p++;
    }
  }
  /* number, true, false, null */
  const char *start = p;
  while (p < end && (strchr("+-.0123456789eE", *p) || (*p >= 'a' && *p <= 'z'))) p++;
  return p > start ? p : NULL;
}

/* Finds top-level `key` in the JSON object [json, end); returns the value's position or NULL. */
static const char *find_key(const char *json, const char *end, const char *key) {
  const char *p = skip_ws(json, end);
  if (p >= end || *p != '{') return NULL;
  p = skip_ws(p + 1, end);
  if (p < end && *p == '}') return NULL;
  buf_t name = {0};
  const char *found = NULL;
  while (p < end) {
    name.len = 0;
    p = parse_string(skip_ws(p, end), end, &name);
    if (!p) break;
    p = skip_ws(p, end);
    if (p >= end || *p != ':') break;
    p = skip_ws(p + 1, end);
    if (name.data && strcmp(name.data, key) == 0 && name.len == strlen(key)) {
      found = p;
      break;
    }
    p = skip_value(p, end, 1);
    if (!p) break;
    p = skip_ws(p, end);
    if (p >= end || *p != ',') break;
    p++;
  }
  free(name.data);
  return found;
}

/* The decoded string value of top-level `key`, or NULL (missing, not a string, malformed). */
static char *string_field(const char *json, size_t len, const char *key) {
  const char *v = find_key(json, json + len, key);
  if (!v || *v != '"') return NULL;
  buf_t out = {0};
  buf_reserve(&out, 0);
  out.data[0] = '\0';
  if (!parse_string(v, json + len, &out)) {
    free(out.data);
    return NULL;
  }
  return out.data;
}

/* ---------- I/O ---------- */
static char *read_stdin(size_t *len) {
  buf_t b = {0};
  buf_reserve(&b, 0);
  for (;;) {
    buf_reserve(&b, 65536);
    ssize_t n = read(0, b.data + b.len, 65536);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    b.len += (size_t)n;
    if (b.len > MAX_STDIN) break;
  }
  b.data[b.len] = '\0';
  *len = b.len;
  return b.data;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int read_all(int fd, char *p, size_t n) {
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) {
      errno = ECONNRESET;
      return -1;
    }
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

static const char *config_version(const char *in, size_t len) {
  char *v = string_field(in, len, "cniVersion");
  if (v) {
    for (int i = 0; SUPPORTED[i]; i++)
      if (strcmp(v, SUPPORTED[i]) == 0) {
        free(v);
        return SUPPORTED[i];
      }
    free(v);
  }
  return LATEST_VERSION;
}

/* Prints a CNI error result and exits 1 (the spec's error convention). */
static void cni_fail(const char *version, int code, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  buf_t out = {0};
  buf_puts(&out, "{\"cniVersion\":");
  buf_json_string(&out, version, strlen(version));
  char num[32];
  snprintf(num, sizeof num, ",\"code\":%d,\"msg\":", code);
  buf_puts(&out, num);
  buf_json_string(&out, msg, strlen(msg));
  buf_puts(&out, "}\n");
  fputs(out.data, stdout);
  fflush(stdout);
  exit(1);
}

int netlink_helper_main(void);

int main(int argc, char **argv) {
  /* Multi-call: the agent runs `edgemesh netlink-helper`; runtimes never pass arguments. */
  if (argc > 1 && strcmp(argv[1], "netlink-helper") == 0) return netlink_helper_main();
  size_t in_len;
  char *in = read_stdin(&in_len);
  const char *version = config_version(in, in_len);
  if (in_len > MAX_STDIN) cni_fail(version, 5, "network configuration on stdin is larger than %d bytes", MAX_STDIN);

  const char *command = getenv("CNI_COMMAND");
  if (command && strcmp(command, "VERSION") == 0) {
    printf("{\"cniVersion\":\"%s\",\"supportedVersions\":[", version);
    for (int i = 0; SUPPORTED[i]; i++) printf("%s\"%s\"", i ? "," : "", SUPPORTED[i]);
    printf("]}\n");
    return 0;
  }

  char *socket_path = string_field(in, in_len, "socket");
  if (!socket_path || !*socket_path) {
    const char *env = getenv("EDGEMESH_CNI_SOCKET");
    socket_path = strdup(env && *env ? env : DEFAULT_SOCKET);
  }

  /* The request: every CNI_* variable (the agent validates them) and stdin verbatim. */
  buf_t req = {0};
  buf_put(&req, "\0\0\0\0", 4);
  buf_puts(&req, "{\"env\":{");
  int first = 1;
  for (char **e = environ; *e; e++) {
    if (strncmp(*e, "CNI_", 4) != 0) continue;
    const char *eq = strchr(*e, '=');
    if (!eq) continue;
    if (!first) buf_putc(&req, ',');
    first = 0;
    buf_json_string(&req, *e, (size_t)(eq - *e));
    buf_putc(&req, ':');
    buf_json_string(&req, eq + 1, strlen(eq + 1));
  }
  buf_puts(&req, "},\"stdin\":");
  buf_json_string(&req, in, in_len);
  buf_putc(&req, '}');
  uint32_t body = (uint32_t)(req.len - 4);
  req.data[0] = (char)(body >> 24);
  req.data[1] = (char)(body >> 16);
  req.data[2] = (char)(body >> 8);
  req.data[3] = (char)body;

  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(socket_path) >= sizeof addr.sun_path)
    cni_fail(version, 7, "socket path %s is too long for a unix socket", socket_path);
  strcpy(addr.sun_path, socket_path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
    cni_fail(version, 11, "edgemesh agent not reachable at %s: %s; try again later", socket_path, strerror(errno));
  struct timeval tv = {.tv_sec = REPLY_TIMEOUT_SEC};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (write_all(fd, req.data, req.len) < 0)
    cni_fail(version, 11, "edgemesh agent at %s did not take the request: %s; try again later", socket_path,
             strerror(errno));
  shutdown(fd, SHUT_WR);

  unsigned char hdr[4];
  if (read_all(fd, (char *)hdr, 4) < 0)
    cni_fail(version, 11, "edgemesh agent at %s gave no reply: %s; try again later", socket_path, strerror(errno));
  uint32_t rlen = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
  if (rlen > MAX_REPLY) cni_fail(version, 5, "edgemesh agent at %s sent an oversized reply", socket_path);
  char *reply = malloc(rlen + 1);
  if (!reply || read_all(fd, reply, rlen) < 0)
    cni_fail(version, 11, "edgemesh agent at %s sent a truncated reply: %s; try again later", socket_path,
             strerror(errno));
  reply[rlen] = '\0';
  close(fd);

  const char *code_at = find_key(reply, reply + rlen, "exitCode");
  char *out = string_field(reply, rlen, "stdout");
  char *err = string_field(reply, rlen, "stderr");
  if (!code_at || !out) cni_fail(version, 5, "edgemesh agent at %s sent a malformed reply", socket_path);
  int exit_code = atoi(code_at);
  fputs(out, stdout);
  if (err) fputs(err, stderr);
  fflush(stdout);
  fflush(stderr);
  return exit_code;
}
