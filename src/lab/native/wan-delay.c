/*
 * raven-wan-delay: the WAN delay line of `raven lab` (this kernel has no netem).
 *
 * Creates two TAP devices and copies every Ethernet frame read from one into the other DELAY_MS
 * later, keeping the order. The lab moves one TAP into a host's namespace as its wan0 and keeps
 * the other in the switch as the uplink port, so the pair stands where a veth pair would. A frame
 * that meets a full queue, or a TAP that is down (the port was cut), is dropped and counted.
 *
 *   usage: raven-wan-delay TAP_A TAP_B DELAY_MS
 *
 * Prints "ready" once both TAPs exist; SIGTERM ends it with the counts on stderr.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

enum { SLOTS = 2048, FRAME_MAX = 2048 };

struct frame {
  int64_t due_ns;
  uint16_t len;
  unsigned char data[FRAME_MAX];
};

/* One direction: frames read from `from`, written to `to` when due. A ring, oldest at `head`. */
struct line {
  int from, to;
  struct frame *slots;
  unsigned head, count;
  uint64_t copied, dropped;
};

static volatile sig_atomic_t stopping;

static void on_term(int sig) {
  (void)sig;
  stopping = 1;
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int open_tap(const char *name) {
  struct ifreq req;
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    perror("raven-wan-delay: open /dev/net/tun");
    exit(1);
  }
  memset(&req, 0, sizeof req);
  req.ifr_flags = IFF_TAP | IFF_NO_PI;
  if (strlen(name) >= IFNAMSIZ) {
    fprintf(stderr, "raven-wan-delay: device name %s is longer than %d characters\n", name, IFNAMSIZ - 1);
    exit(2);
  }
  strcpy(req.ifr_name, name);
  if (ioctl(fd, TUNSETIFF, &req) < 0) {
    fprintf(stderr, "raven-wan-delay: failed to create TAP %s: %s\n", name, strerror(errno));
    exit(1);
  }
  return fd;
}

/* Writes every frame that is due; returns nanoseconds until the next one, or -1 when empty. */
static int64_t flush(struct line *l, int64_t now) {
  while (l->count > 0) {
    struct frame *f = &l->slots[l->head];
    if (f->due_ns > now) return f->due_ns - now;
    if (write(l->to, f->data, f->len) == f->len) l->copied++;
    else l->dropped++;
    l->head = (l->head + 1) % SLOTS;
    l->count--;
  }
  return -1;
}

/* Reads every frame waiting on `from` and queues it, due `delay_ns` from now. */
static void fill(struct line *l, int64_t delay_ns) {
  for (;;) {
    unsigned char spill[FRAME_MAX];
    int full = l->count == SLOTS;
    struct frame *f = full ? NULL : &l->slots[(l->head + l->count) % SLOTS];
    ssize_t n = read(l->from, full ? spill : f->data, FRAME_MAX);
    if (n <= 0) return;
    if (full) {
      l->dropped++;
      continue;
    }
    f->len = (uint16_t)n;
    f->due_ns = now_ns() + delay_ns;
    l->count++;
  }
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s TAP_A TAP_B DELAY_MS\n", argv[0]);
    return 2;
  }
  char *end;
  double delay_ms = strtod(argv[3], &end);
  if (*end != '\0' || delay_ms < 0 || delay_ms > 10000) {
    fprintf(stderr, "raven-wan-delay: DELAY_MS must be a number of milliseconds from 0 to 10000, not %s\n", argv[3]);
    return 2;
  }
  int64_t delay_ns = (int64_t)(delay_ms * 1e6);
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  int a = open_tap(argv[1]), b = open_tap(argv[2]);
  struct line lines[2] = {{a, b, calloc(SLOTS, sizeof(struct frame)), 0, 0, 0, 0}, {b, a, calloc(SLOTS, sizeof(struct frame)), 0, 0, 0, 0}};
  if (!lines[0].slots || !lines[1].slots) {
    fprintf(stderr, "raven-wan-delay: out of memory\n");
    return 1;
  }
  printf("ready\n");
  fflush(stdout);
  while (!stopping) {
    int64_t now = now_ns(), wait = -1;
    for (int i = 0; i < 2; i++) {
      int64_t w = flush(&lines[i], now);
      if (w >= 0 && (wait < 0 || w < wait)) wait = w;
    }
    struct pollfd fds[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
    struct timespec timeout = {wait < 0 ? 1 : wait / 1000000000, wait < 0 ? 0 : wait % 1000000000};
    if (ppoll(fds, 2, &timeout, NULL) <= 0) continue;
    for (int i = 0; i < 2; i++)
      if (fds[i].revents & POLLIN) fill(&lines[i], delay_ns);
  }
  fprintf(stderr, "raven-wan-delay: %s->%s %llu copied %llu dropped; %s->%s %llu copied %llu dropped\n", argv[1], argv[2], (unsigned long long)lines[0].copied,
          (unsigned long long)lines[0].dropped, argv[2], argv[1], (unsigned long long)lines[1].copied, (unsigned long long)lines[1].dropped);
  return 0;
}
