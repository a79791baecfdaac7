// `edgemesh netlink-helper`: a long-lived helper the agent starts once (same static binary
// as the CNI client, selected by argv[1]; runtimes never pass arguments to a CNI plugin).
// It performs the per-pod interface plumbing with rtnetlink directly, so a pod ADD or DEL
// costs no process start at all (each `ip`/`nsenter` exec costs milliseconds, more on a
// loaded node). One request per line on stdin, one reply per line on stdout (matched by ID):
//   veth ID HOST HOSTMAC MTU BRIDGE PODIF PODMAC NETNS   → host veth on BRIDGE, up; peer born in NETNS as PODIF
//   pod ID NETNS IFNAME ADDR/PLEN,... GW,...               → addresses (no DAD), link up, default routes
//   add ID HOST HOSTMAC MTU BRIDGE PODIF PODMAC NETNS ADDR/PLEN,... GW,...
//                                                          → veth, then pod: a whole ADD in one request
//   del ID NAME                                            → delete link NAME (ok when already gone);
//                                                            DELs arriving together are deleted as one group
// Replies: "ok ID", "gone ID" (del of a missing link), or "err ID ERRNO message", each as
// soon as its request is done (a burst of ADDs does not wait for the slowest).
// A link deletion returns only after an RCU barrier (20 ms and more on a busy node), although
// the kernel unlists the device at its start: DELs run on a worker thread each batch, so
// neither ADDs nor the next burst of DELs wait for an earlier barrier. Their replies may come
// after later requests' replies.
#define _GNU_SOURCE /* setns, CLONE_NEWNET */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define NL_BUF 8192

typedef struct {
  struct nlmsghdr *h;
  size_t cap;
} msg_t;

static void *msg_tail(msg_t *m) { return (char *)m->h + NLMSG_ALIGN(m->h->nlmsg_len); }

static int add_attr(msg_t *m, unsigned short type, const void *data, size_t len) {
  size_t rtalen = RTA_LENGTH(len);
  if (NLMSG_ALIGN(m->h->nlmsg_len) + RTA_ALIGN(rtalen) > m->cap) return -1;
  struct rtattr *rta = msg_tail(m);
  rta->rta_type = type;
  rta->rta_len = (unsigned short)rtalen;
  if (len) memcpy(RTA_DATA(rta), data, len);
  m->h->nlmsg_len = (unsigned)(NLMSG_ALIGN(m->h->nlmsg_len) + RTA_ALIGN(rtalen));
  return 0;
}
static int add_u32(msg_t *m, unsigned short type, uint32_t v) { return add_attr(m, type, &v, sizeof v); }
static int add_str(msg_t *m, unsigned short type, const char *s) { return add_attr(m, type, s, strlen(s) + 1); }
static struct rtattr *nest_start(msg_t *m, unsigned short type) {
  struct rtattr *start = msg_tail(m);
  add_attr(m, type, NULL, 0);
  return start;
}
static void nest_end(msg_t *m, struct rtattr *start) {
  start->rta_len = (unsigned short)((char *)msg_tail(m) - (char *)start);
}

static int parse_mac(const char *s, unsigned char mac[6]) {
  return sscanf(s, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &mac[0], &mac[1], &mac[2], &mac[3], &mac[4], &mac[5]) == 6 ? 0
                                                                                                                 : -1;
}

static unsigned seq_no = 1;

/* Sends one request and waits for its ACK; returns 0 or a negative errno. */
static int talk(int fd, msg_t *m) {
  m->h->nlmsg_seq = ++seq_no;
  m->h->nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
  struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
  if (sendto(fd, m->h, m->h->nlmsg_len, 0, (struct sockaddr *)&sa, sizeof sa) < 0) return -errno;
  char buf[NL_BUF];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (unsigned)n); h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_seq != m->h->nlmsg_seq) continue;
      if (h->nlmsg_type == NLMSG_ERROR) return ((struct nlmsgerr *)NLMSG_DATA(h))->error;
    }
  }
}

static int nl_socket(void) {
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) return -1;
  struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static void init_msg(msg_t *m, char *buf, size_t cap, unsigned short type, unsigned short flags, size_t hdr) {
  memset(buf, 0, cap);
  m->h = (struct nlmsghdr *)buf;
  m->cap = cap;
  m->h->nlmsg_len = (unsigned)NLMSG_LENGTH(hdr);
  m->h->nlmsg_type = type;
  m->h->nlmsg_flags = flags;
}

/* veth pair: host end named `host` on `bridge`, up; peer created inside the netns as `podif`. */
static int op_veth(int nl, char **a) {
  const char *host = a[0], *hostmac = a[1], *bridge = a[3], *podif = a[4], *podmac = a[5], *netns = a[6];
  uint32_t mtu = (uint32_t)strtoul(a[2], NULL, 10);
  unsigned char hmac[6], pmac[6];
  if (parse_mac(hostmac, hmac) || parse_mac(podmac, pmac)) return -EINVAL;
  unsigned master = if_nametoindex(bridge);
  if (!master) return -ENODEV;
  int nsfd = open(netns, O_RDONLY | O_CLOEXEC);
  if (nsfd < 0) return -errno;
  char buf[NL_BUF];
  msg_t m;
  init_msg(&m, buf, sizeof buf, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, sizeof(struct ifinfomsg));
  struct ifinfomsg *ifi = NLMSG_DATA(m.h);
  ifi->ifi_family = AF_UNSPEC;
  ifi->ifi_flags = IFF_UP;
  ifi->ifi_change = IFF_UP;
  add_str(&m, IFLA_IFNAME, host);
  add_attr(&m, IFLA_ADDRESS, hmac, 6);
  add_u32(&m, IFLA_MTU, mtu);
  add_u32(&m, IFLA_MASTER, master);
  struct rtattr *linkinfo = nest_start(&m, IFLA_LINKINFO);
  add_str(&m, IFLA_INFO_KIND, "veth");
  struct rtattr *data = nest_start(&m, IFLA_INFO_DATA);
  struct rtattr *peer = nest_start(&m, VETH_INFO_PEER);
  struct ifinfomsg peer_ifi = {.ifi_family = AF_UNSPEC};
  /* The peer's ifinfomsg header, then its attributes. */
  memcpy(msg_tail(&m), &peer_ifi, sizeof peer_ifi);
  m.h->nlmsg_len += (unsigned)NLMSG_ALIGN(sizeof peer_ifi);
  add_str(&m, IFLA_IFNAME, podif);
  add_attr(&m, IFLA_ADDRESS, pmac, 6);
  add_u32(&m, IFLA_MTU, mtu);
  add_u32(&m, IFLA_NET_NS_FD, (uint32_t)nsfd);
  nest_end(&m, peer);
  nest_end(&m, data);
  nest_end(&m, linkinfo);
  int rc = talk(nl, &m);
  close(nsfd);
  return rc;
}

static int parse_ip(const char *text, int *family, unsigned char addr[16], int *plen) {
  char tmp[64];
  snprintf(tmp, sizeof tmp, "%s", text);
  char *slash = strchr(tmp, '/');
  *plen = -1;
  if (slash) {
    *slash = '\0';
    *plen = atoi(slash + 1);
  }
  if (inet_pton(AF_INET, tmp, addr) == 1) {
    *family = AF_INET;
    return 4;
  }
  if (inet_pton(AF_INET6, tmp, addr) == 1) {
    *family = AF_INET6;
    return 16;
  }
  return -1;
}

/* Inside the pod's netns: addresses, link up, default routes. Switches back before returning. */
static int op_pod(int host_ns, char **a) {
  const char *netns = a[0], *ifname = a[1];
  int nsfd = open(netns, O_RDONLY | O_CLOEXEC);
  if (nsfd < 0) return -errno;
  if (setns(nsfd, CLONE_NEWNET) < 0) {
    int e = -errno;
    close(nsfd);
    return e;
  }
  close(nsfd);
  int rc = 0;
  /* The socket belongs to the namespace it is created in: the pod's. */
  int nl = nl_socket();
  unsigned idx = if_nametoindex(ifname);
  char buf[NL_BUF];
  msg_t m;
  if (nl < 0) rc = -errno;
  else if (!idx) rc = -ENODEV;
  char list[1024];
  snprintf(list, sizeof list, "%s", a[2]);
  for (char *save = NULL, *tok = strtok_r(list, ",", &save); rc == 0 && tok; tok = strtok_r(NULL, ",", &save)) {
    int family, plen;
    unsigned char addr[16];
    int alen = parse_ip(tok, &family, addr, &plen);
    if (alen < 0 || plen < 0) {
      rc = -EINVAL;
      break;
    }
    init_msg(&m, buf, sizeof buf, RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, sizeof(struct ifaddrmsg));
    struct ifaddrmsg *ifa = NLMSG_DATA(m.h);
    ifa->ifa_family = (unsigned char)family;
    ifa->ifa_prefixlen = (unsigned char)plen;
    ifa->ifa_index = idx;
    /* No duplicate address detection: IPAM guarantees uniqueness, DAD would delay the pod. */
    if (family == AF_INET6) ifa->ifa_flags = IFA_F_NODAD;
    add_attr(&m, IFA_LOCAL, addr, (size_t)alen);
    add_attr(&m, IFA_ADDRESS, addr, (size_t)alen);
    rc = talk(nl, &m);
  }
  if (rc == 0) {
    init_msg(&m, buf, sizeof buf, RTM_NEWLINK, 0, sizeof(struct ifinfomsg));
    struct ifinfomsg *ifi = NLMSG_DATA(m.h);
    ifi->ifi_index = (int)idx;
    ifi->ifi_flags = IFF_UP;
    ifi->ifi_change = IFF_UP;
    rc = talk(nl, &m);
  }
  snprintf(list, sizeof list, "%s", a[3]);
  for (char *save = NULL, *tok = strtok_r(list, ",", &save); rc == 0 && tok; tok = strtok_r(NULL, ",", &save)) {
    int family, plen;
    unsigned char gw[16];
    int alen = parse_ip(tok, &family, gw, &plen);
    if (alen < 0) {
      rc = -EINVAL;
      break;
    }
    init_msg(&m, buf, sizeof buf, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, sizeof(struct rtmsg));
    struct rtmsg *rt = NLMSG_DATA(m.h);
    rt->rtm_family = (unsigned char)family;
    rt->rtm_table = RT_TABLE_MAIN;
    rt->rtm_protocol = RTPROT_BOOT;
    rt->rtm_scope = RT_SCOPE_UNIVERSE;
    rt->rtm_type = RTN_UNICAST;
    add_attr(&m, RTA_GATEWAY, gw, (size_t)alen);
    add_u32(&m, RTA_OIF, idx);
    rc = talk(nl, &m);
  }
  if (nl >= 0) close(nl);
  if (setns(host_ns, CLONE_NEWNET) < 0) {
    /* Never keep serving from the wrong namespace. */
    perror("edgemesh netlink-helper: cannot return to the host namespace");
    exit(3);
  }
  return rc;
}

/* Deletes a link by name (no index lookup, so never a stale index). */
static int op_del(int nl, char **a) {
  char buf[NL_BUF];
  msg_t m;
  init_msg(&m, buf, sizeof buf, RTM_DELLINK, 0, sizeof(struct ifinfomsg));
  add_str(&m, IFLA_IFNAME, a[0]);
  return talk(nl, &m);
}

/* Link groups used only for a moment, to delete several host veths in one kernel operation:
   a per-device delete waits for an RCU barrier each, a group delete once for all. Each
   deletion job takes its own group, so concurrent jobs never delete each other's links. */
#define DOOMED_GROUP_BASE 0x65640000u

static int set_group(int nl, const char *name, unsigned group) {
  char buf[NL_BUF];
  msg_t m;
  init_msg(&m, buf, sizeof buf, RTM_NEWLINK, 0, sizeof(struct ifinfomsg));
  add_str(&m, IFLA_IFNAME, name);
  add_u32(&m, IFLA_GROUP, group);
  return talk(nl, &m);
}

static int delete_group(int nl, unsigned group) {
  char buf[NL_BUF];
  msg_t m;
  init_msg(&m, buf, sizeof buf, RTM_DELLINK, 0, sizeof(struct ifinfomsg));
  add_u32(&m, IFLA_GROUP, group);
  return talk(nl, &m);
}

#define MAX_ARGS 16
typedef struct {
  char *argv[MAX_ARGS];
  int argc;
  int rc;
} req_t;

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static void print_reply(const char *op, const char *id, int rc) {
  if (rc == 0) printf("ok %s\n", id);
  else if (rc == -ENODEV && strcmp(op, "del") == 0) printf("gone %s\n", id);
  else printf("err %s %d %s\n", id, -rc, strerror(-rc));
}

/* One batch of consecutive DELs, copied out of the request buffer (which the reader reuses). */
#define ID_MAX 24
typedef struct {
  int n;
  unsigned group;
  struct {
    char id[ID_MAX];
    char name[IFNAMSIZ];
    int rc;
  } links[];
} del_job_t;

#define MAX_DEL_WORKERS 8
static int del_workers; /* running worker threads; touched with __atomic builtins */

static void run_del_job(del_job_t *job) {
  int nl = nl_socket();
  if (nl < 0) {
    for (int k = 0; k < job->n; k++) job->links[k].rc = -errno;
  } else if (job->n == 1) {
    char *args[1] = {job->links[0].name};
    job->links[0].rc = op_del(nl, args);
  } else {
    int marked = 0;
    for (int k = 0; k < job->n; k++) {
      job->links[k].rc = set_group(nl, job->links[k].name, job->group);
      if (job->links[k].rc == 0) marked++;
    }
    if (marked > 0 && delete_group(nl, job->group) != 0) {
      /* Fall back to one delete per device (the group delete is all or nothing). */
      for (int k = 0; k < job->n; k++) {
        char *args[1] = {job->links[k].name};
        if (job->links[k].rc == 0) job->links[k].rc = op_del(nl, args);
      }
    }
  }
  if (nl >= 0) close(nl);
  pthread_mutex_lock(&out_lock);
  for (int k = 0; k < job->n; k++) print_reply("del", job->links[k].id, job->links[k].rc);
  fflush(stdout);
  pthread_mutex_unlock(&out_lock);
  free(job);
}

static void *del_worker(void *arg) {
  run_del_job(arg);
  __atomic_sub_fetch(&del_workers, 1, __ATOMIC_SEQ_CST);
  return NULL;
}

/* Hands DELs reqs[i..j) to a worker thread (inline when too many run or on any failure). */
static void start_del_job(req_t *reqs, int i, int j) {
  static unsigned next_group;
  del_job_t *job = malloc(sizeof *job + (size_t)(j - i) * sizeof job->links[0]);
  if (!job) {
    pthread_mutex_lock(&out_lock);
    for (int k = i; k < j; k++) print_reply("del", reqs[k].argv[1], -ENOMEM);
    fflush(stdout);
    pthread_mutex_unlock(&out_lock);
    return;
  }
  job->n = j - i;
  job->group = DOOMED_GROUP_BASE | (next_group++ & 0xffffu);
  for (int k = i; k < j; k++) {
    snprintf(job->links[k - i].id, ID_MAX, "%s", reqs[k].argv[1]);
    snprintf(job->links[k - i].name, IFNAMSIZ, "%s", reqs[k].argv[2]);
  }
  if (__atomic_add_fetch(&del_workers, 1, __ATOMIC_SEQ_CST) <= MAX_DEL_WORKERS) {
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    int started = pthread_create(&t, &attr, del_worker, job) == 0;
    pthread_attr_destroy(&attr);
    if (started) return;
  }
  __atomic_sub_fetch(&del_workers, 1, __ATOMIC_SEQ_CST);
  run_del_job(job);
}

/* A whole ADD: the veth pair, then the pod side (its name and namespace from the veth's arguments). */
static int op_add(int nl, int host_ns, char **a) {
  int rc = op_veth(nl, a);
  if (rc != 0) return rc;
  char *pod[4] = {a[6], a[4], a[7], a[8]};
  return op_pod(host_ns, pod);
}

/* Runs a batch of requests that arrived together; consecutive DELs go to one deletion job. */
static void run_batch(int nl, int host_ns, req_t *reqs, int n) {
  for (int i = 0; i < n;) {
    req_t *r = &reqs[i];
    const char *op = r->argv[0];
    if (strcmp(op, "del") == 0 && r->argc == 3) {
      int j = i;
      while (j < n && strcmp(reqs[j].argv[0], "del") == 0 && reqs[j].argc == 3) j++;
      start_del_job(reqs, i, j);
      i = j;
      continue;
    }
    if (strcmp(op, "veth") == 0 && r->argc == 9) r->rc = op_veth(nl, r->argv + 2);
    else if (strcmp(op, "pod") == 0 && r->argc == 6) r->rc = op_pod(host_ns, r->argv + 2);
    else if (strcmp(op, "add") == 0 && r->argc == 11) r->rc = op_add(nl, host_ns, r->argv + 2);
    else r->rc = -EINVAL;
    pthread_mutex_lock(&out_lock);
    print_reply(op, r->argv[1], r->rc);
    fflush(stdout);
    pthread_mutex_unlock(&out_lock);
    i++;
  }
}

int netlink_helper_main(void) {
  int host_ns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  int nl = nl_socket();
  if (host_ns < 0 || nl < 0) {
    perror("edgemesh netlink-helper");
    return 1;
  }
  /* Everything that is already readable forms one batch (bounded: one buffer of lines). */
  static char buf[256 * 1024];
  static req_t reqs[1024];
  size_t have = 0;
  for (;;) {
    /* Read only when no complete line is waiting (a burst may exceed one batch). */
    if (!memchr(buf, '\n', have)) {
      ssize_t got = read(0, buf + have, sizeof buf - 1 - have);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) break;
      have += (size_t)got;
    }
    int n = 0;
    char *start = buf, *nl_at;
    while (n < 1024 && (nl_at = memchr(start, '\n', (size_t)(buf + have - start)))) {
      *nl_at = '\0';
      req_t *r = &reqs[n];
      r->argc = 0;
      r->rc = 0;
      for (char *save = NULL, *tok = strtok_r(start, " ", &save); tok && r->argc < MAX_ARGS;
           tok = strtok_r(NULL, " ", &save))
        r->argv[r->argc++] = tok;
      start = nl_at + 1;
      if (r->argc >= 2) n++;
    }
    run_batch(nl, host_ns, reqs, n);
    /* Keep the rest for the next round; a line longer than the buffer is dropped. */
    size_t rest = (size_t)(buf + have - start);
    if (rest >= sizeof buf - 1) rest = 0;
    memmove(buf, start, rest);
    have = rest;
  }
  /* Input closed: let running deletions finish and answer before the process goes. */
  while (__atomic_load_n(&del_workers, __ATOMIC_SEQ_CST) > 0) usleep(1000);
  return 0;
}
