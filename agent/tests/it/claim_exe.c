/*
 * claim_exe SOCKET FILE: makes /proc/self/exe point at FILE without exec,
 * as any unprivileged process can inside a user namespace of its own, then
 * connects to the unix socket SOCKET, writes {"pid": N} and a newline, and
 * waits until the other end closes.
 *
 * prctl(PR_SET_MM, PR_SET_MM_MAP) with an exe_fd needs CAP_CHECKPOINT_RESTORE
 * or CAP_SYS_ADMIN in the caller's own user namespace (unshare(CLONE_NEWUSER)
 * grants both there), and the old executable must no longer be mapped. So it
 * runs under the dynamic loader (`ld.so ./claim_exe ...`, the loader being
 * the kernel's idea of the executable), unmaps the loader once started, and
 * from then on makes raw system calls only.
 *
 * Exit codes: 2 unshare, 3 open FILE, 4 /proc/self reads, 5 prctl, 6 connect.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/prctl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

static char maps[1 << 16];
static char stat_text[4096];

static int slurp(const char *path, char *buf, size_t cap) {
  int fd = open(path, O_RDONLY);
  if (fd < 0) return -1;
  size_t n = 0;
  ssize_t r;
  while (n + 1 < cap && (r = read(fd, buf + n, cap - 1 - n)) > 0) n += (size_t)r;
  close(fd);
  buf[n] = 0;
  return (int)n;
}

int main(int argc, char **argv) {
  if (argc != 3) return 1;
  if (unshare(CLONE_NEWUSER) != 0) return 2;
  int exe = open(argv[2], O_RDONLY);
  if (exe < 0) return 3;

  /* The current layout, which PR_SET_MM_MAP must be given back. */
  if (slurp("/proc/self/stat", stat_text, sizeof stat_text) <= 0) return 4;
  unsigned long long f[64] = {0};
  char *p = strrchr(stat_text, ')');
  if (!p) return 4;
  int field = 3;
  for (char *t = strtok(p + 2, " "); t && field < 64; t = strtok(NULL, " "), field++)
    f[field] = strtoull(t, NULL, 10);
  struct prctl_mm_map m;
  memset(&m, 0, sizeof m);
  m.start_code = f[26];
  m.end_code = f[27];
  m.start_stack = f[28];
  m.start_data = f[45];
  m.end_data = f[46];
  m.start_brk = f[47];
  m.arg_start = f[48];
  m.arg_end = f[49];
  m.env_start = f[50];
  m.env_end = f[51];
  m.brk = (unsigned long long)(unsigned long)sbrk(0);
  m.exe_fd = (unsigned int)exe;

  /* Everything that needs libc's loader-backed parts, before unmapping. */
  char report[64];
  int report_len = snprintf(report, sizeof report, "{\"pid\": %d}\n", getpid());
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  strncpy(addr.sun_path, argv[1], sizeof addr.sun_path - 1);
  if (slurp("/proc/self/maps", maps, sizeof maps) <= 0) return 4;
  unsigned long ranges[64][2];
  int nranges = 0;
  for (char *line = maps; *line && nranges < 64;) {
    char *end = strchr(line, '\n');
    if (!end) break;
    *end = 0;
    if (strstr(line, "/ld-linux")) {
      unsigned long a, b;
      if (sscanf(line, "%lx-%lx", &a, &b) == 2) {
        ranges[nranges][0] = a;
        ranges[nranges][1] = b;
        nranges++;
      }
    }
    line = end + 1;
  }
  fflush(NULL);

  for (int i = 0; i < nranges; i++)
    syscall(SYS_munmap, ranges[i][0], ranges[i][1] - ranges[i][0]);
  if (syscall(SYS_prctl, PR_SET_MM, PR_SET_MM_MAP, &m, sizeof m, 0) != 0)
    syscall(SYS_exit_group, 5);
  long s = syscall(SYS_socket, AF_UNIX, SOCK_STREAM, 0);
  if (s < 0 || syscall(SYS_connect, s, &addr, sizeof addr) != 0)
    syscall(SYS_exit_group, 6);
  syscall(SYS_write, s, report, report_len);
  char byte;
  syscall(SYS_read, s, &byte, 1);
  syscall(SYS_exit_group, 0);
  return 0;
}
