// commprof native capture kernel: the capture file's record region (region_writer.h).
#include "region_writer.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

namespace commprof_native {

namespace {

uint32_t kCrcTable[256];

}  // namespace

void crc_init() {
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    kCrcTable[i] = c;
  }
}
// zlib's crc32(data, prev): chained the same way.
static inline uint32_t crc32(uint32_t prev, const void* data, size_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  uint32_t c = ~prev;
  for (size_t i = 0; i < n; ++i) c = kCrcTable[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return ~c;
}

// Maps a new extent of whole chunks holding nbytes (Region::mu held); returns 0 or an errno.
static int region_grow(Region& r, size_t nbytes) {
  if (r.fail_after_grows == 0) return r.fail_errno;
  if (r.fail_after_grows > 0) --r.fail_after_grows;
  const int64_t size = (int64_t(nbytes) + r.chunk - 1) / r.chunk * r.chunk;
  const int64_t off = r.file_end;
  int e = posix_fallocate(r.fd, off, size);
  if (e == EOPNOTSUPP || e == ENOSYS || e == EINVAL) {  // no fallocate here: sparse
    e = ftruncate(r.fd, off + size) == 0 ? 0 : errno;
  }
  if (e) return e;
  void* m = mmap(nullptr, size_t(size), PROT_READ | PROT_WRITE, MAP_SHARED, r.fd, off);
  if (m == MAP_FAILED) return errno;
  if (r.map) munmap(r.map, size_t(r.end));  // its pages stay in the page cache and reach the file
  r.map = static_cast<char*>(m);
  r.base = off; r.end = size; r.pos = 0; r.file_end = off + size;
  return 0;
}

// One frame; 0, -1 (the region is not open) or an errno.  Never allocates.
int region_put(uint8_t kind, const void* payload, uint32_t n) {
  Region& r = R();
  std::lock_guard<std::mutex> g(r.mu);
  if (!r.open.load(std::memory_order_relaxed)) return -1;
  const size_t size = 9 + size_t(n);
  if (r.pos + int64_t(size) > r.end) {
    const int e = region_grow(r, size);
    if (e) return e;
  }
  char* dst = r.map + r.pos;
  uint8_t head[5];
  head[0] = kind;
  memcpy(head + 1, &n, 4);  // little-endian (x86_64, aarch64)
  const uint32_t crc = crc32(crc32(0, head, 5), payload, n);
  dst[0] = 0;  // not committed yet
  memcpy(dst + 1, &n, 4);
  memcpy(dst + 5, &crc, 4);
  memcpy(dst + 9, payload, n);
  __atomic_store_n(reinterpret_cast<uint8_t*>(dst), kind, __ATOMIC_RELEASE);  // the commit
  r.pos += int64_t(size);
  return 0;
}

// A kernel-side append (no caller to tell): the first errno is kept for the flusher.
void region_put_or_note(uint8_t kind, const void* payload, uint32_t n) {
  const int e = region_put(kind, payload, n);
  if (e > 0) {
    int zero = 0;
    R().error.compare_exchange_strong(zero, e);
  }
}

int region_start(int fd, int64_t start, int64_t chunk) {
  Region& r = R();
  std::lock_guard<std::mutex> g3(r.mu);
  if (r.open.load() || r.fd >= 0) return EBUSY;
  r.fd = fd; r.chunk = chunk; r.file_end = start; r.base = start; r.end = 0; r.pos = 0;
  r.map = nullptr; r.error = 0;
  const int e = region_grow(r, 1);
  if (e) { r.fd = -1; return e; }
  r.open = true;
  return 0;
}

int64_t region_bytes() {
  Region& r = R();
  std::lock_guard<std::mutex> g(r.mu);
  return r.base + r.pos;
}

static void region_stop(Region& r, bool truncate) {
  r.open = false;
  r.direct = false;  // kernel records buffer again (and are dropped: recording is over)
  const int64_t used = r.base + r.pos;
  if (r.map) munmap(r.map, size_t(r.end));
  r.map = nullptr;
  r.base = used; r.pos = 0; r.end = 0;
  if (r.fd >= 0) {
    if (truncate && ftruncate(r.fd, used) != 0) r.error = errno;
    close(r.fd);
    r.fd = -1;
  }
}

// The end: unmap, cut the file after its last record (the trailer is appended before).
int region_close() {
  Region& r = R();
  std::lock_guard<std::mutex> g(r.mu);
  if (r.fd < 0) return 0;
  region_stop(r, true);
  return r.error.load();
}

// Stop writing and keep the file as it is; locked=false in a forked child, whose copy of the
// mutex another thread of the parent may hold forever.
void region_abandon(bool locked) {
  Region& r = R();
  if (!locked) {
    region_stop(r, false);
    return;
  }
  std::lock_guard<std::mutex> g(r.mu);
  region_stop(r, false);
}

}  // namespace commprof_native
