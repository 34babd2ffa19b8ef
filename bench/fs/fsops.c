/* fsops: the small-file loops of scripts/bench.sh, compiled by it with gcc -O2.
 * Prints "<ops> <seconds>" for one timed loop over N files named f00000.. in DIR.
 *   fsops create DIR N          open(O_CREAT|O_EXCL|O_WRONLY) + close
 *   fsops stat   DIR N PASSES   stat() of every file, PASSES times
 *   fsops unlink DIR N          unlink() of every file
 *   fsops write  DIR N SIZE     create + write SIZE bytes + close
 *   fsops read   DIR N SIZE     open + read up to SIZE bytes + close
 * Any failed call aborts with its errno (a benchmark that hides errors measures nothing). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static void die(const char *what, const char *path) {
  fprintf(stderr, "fsops: %s %s: %s\n", what, path, strerror(errno));
  exit(1);
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: fsops create|stat|unlink|write|read DIR N [PASSES|SIZE]\n");
    return 2;
  }
  const char *op = argv[1], *dir = argv[2];
  long n = atol(argv[3]);
  long arg = argc > 4 ? atol(argv[4]) : 1;
  char path[4096];
  char *buf = NULL;
  if (!strcmp(op, "write") || !strcmp(op, "read")) {
    buf = malloc(arg > 0 ? arg : 1);
    memset(buf, 'x', arg > 0 ? arg : 1);
  }
  long ops = 0;
  struct stat st;
  double t0 = now();
  if (!strcmp(op, "create")) {
    for (long i = 0; i < n; i++, ops++) {
      snprintf(path, sizeof path, "%s/f%05ld", dir, i);
      int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
      if (fd < 0) die("create", path);
      if (close(fd)) die("close", path);
    }
  } else if (!strcmp(op, "stat")) {
    for (long p = 0; p < arg; p++)
      for (long i = 0; i < n; i++, ops++) {
        snprintf(path, sizeof path, "%s/f%05ld", dir, i);
        if (stat(path, &st)) die("stat", path);
      }
  } else if (!strcmp(op, "unlink")) {
    for (long i = 0; i < n; i++, ops++) {
      snprintf(path, sizeof path, "%s/f%05ld", dir, i);
      if (unlink(path)) die("unlink", path);
    }
  } else if (!strcmp(op, "write")) {
    for (long i = 0; i < n; i++, ops++) {
      snprintf(path, sizeof path, "%s/f%05ld", dir, i);
      int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
      if (fd < 0) die("create", path);
      if (write(fd, buf, arg) != arg) die("write", path);
      if (close(fd)) die("close", path);
    }
  } else if (!strcmp(op, "read")) {
    for (long i = 0; i < n; i++, ops++) {
      snprintf(path, sizeof path, "%s/f%05ld", dir, i);
      int fd = open(path, O_RDONLY | O_CLOEXEC);
      if (fd < 0) die("open", path);
      if (read(fd, buf, arg) < 0) die("read", path);
      if (close(fd)) die("close", path);
    }
  } else {
    fprintf(stderr, "fsops: unknown op %s\n", op);
    return 2;
  }
  printf("%ld %.6f\n", ops, now() - t0);
  return 0;
}
