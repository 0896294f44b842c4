// commprof native capture kernel: the capture file's record region, in C++ (standard C++ and
// POSIX only; capture.h says what the other files hold).
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <atomic>
#include <mutex>

namespace commprof_native {

// -- the capture file's record region (commprof/format/region.py is the Python twin; the rules
// are docs/format.md, "Record region").  Once open, every record of this process -- the kernel's,
// the future callbacks', and the Python hooks' (through region_append) -- is appended here under
// one mutex: the frame with a zero kind byte, then the kind byte as the commit.  The pages are
// the page cache's: an append survives SIGKILL, a segfault or an OOM kill the instant it returns.
// Lock order: State::mu, then State::done_mu, then Region::mu.
struct Region {
  std::mutex mu;
  int fd = -1;
  int64_t chunk = 0;
  int64_t base = 0, end = 0, pos = 0, file_end = 0;  // the mapped extent: file offset, length, next free
  char* map = nullptr;
  std::atomic<bool> open{false};
  std::atomic<int> error{0};  // the first failed append's errno (kernel appends: told at drain)
  int fail_after_grows = -1, fail_errno = 0;  // fault injection (tests)
  std::atomic<bool> direct{false};  // the kernel's records go straight in (region_open)
};
inline Region& R() { static Region* r = new Region(); return *r; }

void crc_init();  // once, before the first append

// Maps the first chunk of `fd` at `start` (Region::mu taken here); 0 or an errno (EBUSY: open).
int region_start(int fd, int64_t start, int64_t chunk);
// One frame; 0, -1 (the region is not open) or an errno.  Never allocates.
int region_put(uint8_t kind, const void* payload, uint32_t n);
// A kernel-side append (no caller to tell): the first errno is kept for the flusher.
void region_put_or_note(uint8_t kind, const void* payload, uint32_t n);
int64_t region_bytes();
int region_close();
void region_abandon(bool locked);

}  // namespace commprof_native
