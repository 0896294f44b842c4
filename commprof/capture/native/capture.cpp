// commprof native capture kernel: one boxed C++ kernel on the ADInplaceOrView key for every
// c10d:: operator commprof knows (see commprof/capture/native/hooks.py, which drives it).
//
// Per call it reads its arguments (before re-dispatching: the callee pops them), re-dispatches
// below ADInplaceOrView, and appends one fixed-size COLL record under a short lock: into the
// capture file's memory-mapped record region once it is open (region_*), before that into a
// buffer the region takes over (or that the flusher drains: drain()).  Completion comes from a
// C++ future callback (no GIL), or from Work.wait, which is this module's too (make_wait).  What
// each record holds is exactly what commprof/capture/collectives.py records; the argument
// positions come from its OpSpec.
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/ivalue.h>
#include <torch/library.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>
#include <torch/csrc/utils/pybind.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <structmember.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <typeinfo>
#include <vector>

namespace py = pybind11;

#if PY_VERSION_HEX >= 0x030D0000
#define COMMPROF_FINALIZING() Py_IsFinalizing()
#else
#define COMMPROF_FINALIZING() _Py_IsFinalizing()
#endif

namespace {

struct Coll {
  int64_t rid; uint16_t op; uint32_t gid; int64_t seq; uint8_t dtype; uint8_t flags; int32_t peer;
  int64_t in_n, in_b, out_n, out_b; uint64_t thread; int64_t t0, t1;
};
struct Done { int64_t rid; int64_t t; uint8_t source; };

// The COLL and DONE records as they are in the file (schema.COLL_FIELDS / DONE_FIELDS, packed
// little-endian; install() checks the sizes against Python's struct sizes).
#pragma pack(push, 1)
struct CollRecord {
  int64_t id; uint16_t op; uint32_t group; int64_t seq; uint8_t dtype; uint8_t flags; int32_t peer;
  int64_t in_numel, in_bytes, out_numel, out_bytes; uint64_t thread; int64_t t_issue, t_return;
};
struct DoneRecord { int64_t id; int64_t t_done; uint8_t source; };
struct WaitRecord { int64_t id; uint64_t thread; int64_t t_start, t_end; uint8_t source; };
#pragma pack(pop)
static_assert(sizeof(WaitRecord) == 33, "WAIT record layout");
static_assert(sizeof(CollRecord) == 84, "COLL record layout");
static_assert(sizeof(DoneRecord) == 17, "DONE record layout");

inline CollRecord packed(const Coll& c) {
  return CollRecord{c.rid, c.op, c.gid, c.seq, c.dtype, c.flags, c.peer, c.in_n, c.in_b, c.out_n,
                    c.out_b, c.thread, c.t0, c.t1};
}
inline DoneRecord packed(const Done& d) { return DoneRecord{d.rid, d.t, d.source}; }

struct Spec {
  int op_code = 0, single_code = -1, single_arg = -1, nargs = 0, pg = 0, peer = -1;
  int work_index = -2, nrets = 0;  // work_index -2: no Work returned
  bool p2p = false;
  std::vector<int> inputs, outputs;
};

struct Group { c10d::ProcessGroup* ptr; c10::weak_intrusive_ptr<c10d::ProcessGroup> weak; uint32_t gid; };
struct Pending { c10d::Work* key; c10::intrusive_ptr<c10d::Work> ref; int64_t rid; bool has_future; };

constexpr size_t kReserve = 8192;
constexpr size_t kMaxBuffered = size_t(1) << 21;  // records held between drains, at most
constexpr size_t kSoftCap = 64, kHardCap = 1024;   // as collectives._PENDING_SOFT/HARD_CAP

// Flag and source values, handed in from commprof/format/schema.py (set_constants).
struct Constants { uint8_t has_future = 1, in_backward = 2, failed = 4, done_future = 1;
                   uint8_t kind_coll = 1, kind_done = 2, kind_wait = 3, done_wait = 2;
                   uint8_t wait_tensor = 2; };

struct State {
  std::mutex mu;       // groups, seq, pending, no_future, coll, errors
  std::mutex done_mu;  // done, completed (the future callbacks take only this one)
  std::vector<Group> groups;
  std::vector<std::array<int64_t, 2>> seq;  // gid -> next sequence number (collective, p2p)
  std::vector<Pending> pending;
  std::vector<std::pair<int, const char*>> no_future;  // (op code, Work type name)
  std::vector<Coll> coll, coll_spare;
  std::vector<Done> done, done_spare;
  std::vector<WaitRecord> waits, waits_spare;  // wait_tensor spans before the region opens
  std::vector<c10d::Work*> completed;
  std::map<std::string, std::pair<int64_t, std::string>> errors;  // where -> (count, first message)
  std::atomic<int64_t> next_rid{0};
  std::atomic<int64_t> self_ns{0};
  std::atomic<int64_t> records{0};
  std::atomic<int64_t> dropped{0};
  std::atomic<bool> enabled{false};
  std::atomic<bool> fault{false};
  std::atomic<bool> direct{false};  // records go straight into the region (region_open)
  std::atomic<int> in_backward{0};
  std::atomic<int> in_py_wait{0};  // inside funcol.wait_tensor's Python wrapper (it times the wait)
  int64_t skew = 0;
  uint8_t dtype_code[256] = {0};
  Constants k;
  py::object* register_group = nullptr;  // Python: (ProcessGroup) -> group id; never freed
  std::unique_ptr<torch::Library> lib, funcol_lib;
};

// Never destroyed: gloo threads may still complete futures while the process exits.
State& S() { static State* s = new State(); return *s; }

inline int64_t now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000000000LL + ts.tv_nsec + S().skew;
}

void note_error(const std::string& where, const std::string& msg) {
  State& s = S();
  std::lock_guard<std::mutex> g(s.mu);
  auto& e = s.errors[where];
  if (e.first++ == 0) e.second = msg;
}

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
};
Region& R() { static Region* r = new Region(); return *r; }

uint32_t kCrcTable[256];
void crc_init() {
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    kCrcTable[i] = c;
  }
}
// zlib's crc32(data, prev): chained the same way.
inline uint32_t crc32(uint32_t prev, const void* data, size_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  uint32_t c = ~prev;
  for (size_t i = 0; i < n; ++i) c = kCrcTable[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return ~c;
}

// Maps a new extent of whole chunks holding nbytes (Region::mu held); returns 0 or an errno.
int region_grow(Region& r, size_t nbytes) {
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
inline void region_put_or_note(uint8_t kind, const void* payload, uint32_t n) {
  const int e = region_put(kind, payload, n);
  if (e > 0) {
    int zero = 0;
    R().error.compare_exchange_strong(zero, e);
  }
}

void sizes(const c10::IValue& v, int64_t& n, int64_t& b, int& dtype) {
  if (v.isTensor()) {
    const at::Tensor& t = v.toTensor();
    if (!t.defined()) return;
    int64_t k = t.numel();
    n += k;
    b += k * int64_t(t.element_size());
    if (dtype < 0) dtype = int(t.scalar_type());
  } else if (v.isList()) {
    for (const c10::IValue& e : v.toListRef()) sizes(e, n, b, dtype);
  }
}

// Group id of a process group: a cached pointer (the weak reference keeps the address from being
// reused while the group lives on: ProcessGroup frees its resources in release_resources), else
// the Python registration (CollectiveHooks._group: identical group frames) under the GIL, once.
uint32_t group_id(const c10::intrusive_ptr<c10d::ProcessGroup>& pg) {
  State& s = S();
  {
    std::lock_guard<std::mutex> g(s.mu);
    for (const Group& e : s.groups)
      if (e.ptr == pg.get()) return e.gid;
  }
  if (!Py_IsInitialized() || COMMPROF_FINALIZING()) throw std::runtime_error("interpreter finalizing");
  int64_t gid;
  {
    py::gil_scoped_acquire gil;
    try {
      gid = (*s.register_group)(py::cast(pg)).cast<int64_t>();
    } catch (py::error_already_set& e) {
      throw std::runtime_error(std::string("group registration: ") + e.what());
    }
  }
  std::lock_guard<std::mutex> g(s.mu);
  s.groups.push_back(Group{pg.get(), c10::weak_intrusive_ptr<c10d::ProcessGroup>(pg), uint32_t(gid)});
  if (s.seq.size() <= size_t(gid)) s.seq.resize(gid + 1, {0, 0});
  return uint32_t(gid);
}

// Drop references to completed Works (called under mu; the refs are moved out to `drop` and
// released by the caller after unlocking: a Work's destructor may need other locks).
void release_locked(State& s, std::vector<c10::intrusive_ptr<c10d::Work>>& drop) {
  std::vector<c10d::Work*> keys;
  {
    std::lock_guard<std::mutex> g(s.done_mu);
    keys.swap(s.completed);
  }
  for (c10d::Work* key : keys) {
    for (size_t i = 0; i < s.pending.size(); ++i) {
      if (s.pending[i].key == key) {
        drop.push_back(std::move(s.pending[i].ref));
        s.pending[i] = std::move(s.pending.back());
        s.pending.pop_back();
        break;
      }
    }
  }
  while (s.pending.size() >= kHardCap) {  // the oldest are forgotten (their wait goes unmatched)
    size_t oldest = 0;
    for (size_t i = 1; i < s.pending.size(); ++i)
      if (s.pending[i].rid < s.pending[oldest].rid) oldest = i;
    drop.push_back(std::move(s.pending[oldest].ref));
    s.pending[oldest] = std::move(s.pending.back());
    s.pending.pop_back();
  }
}

// Beyond the soft cap: release the finished ones (isCompleted runs outside the lock).
void sweep_finished(State& s) {
  std::vector<Pending> snap;
  {
    std::lock_guard<std::mutex> g(s.mu);
    snap = s.pending;
  }
  std::vector<c10d::Work*> finished;
  for (const Pending& p : snap)
    if (p.ref->isCompleted()) finished.push_back(p.key);
  std::vector<c10::intrusive_ptr<c10d::Work>> drop;
  {
    std::lock_guard<std::mutex> g(s.mu);
    for (c10d::Work* key : finished)
      for (size_t i = 0; i < s.pending.size(); ++i)
        if (s.pending[i].key == key) {
          drop.push_back(std::move(s.pending[i].ref));
          s.pending[i] = std::move(s.pending.back());
          s.pending.pop_back();
          break;
        }
  }
}

struct Kernel final : c10::OperatorKernel {
  Spec sp;
  explicit Kernel(Spec s) : sp(std::move(s)) {}

  void operator()(const c10::OperatorHandle& op, c10::DispatchKeySet ks, torch::jit::Stack* stack) {
    State& s = S();
    const c10::DispatchKeySet below = ks & c10::after_ADInplaceOrView_keyset;
    if (!s.enabled.load(std::memory_order_relaxed)) {
      op.redispatchBoxed(below, stack);
      return;
    }
    const int64_t e0 = now();
    // -- the arguments, read before the callee pops them
    c10::intrusive_ptr<c10d::ProcessGroup> pg;
    int op_code = sp.op_code, dtype = -1, out_dtype = -1;
    int64_t in_n = 0, in_b = 0, out_n = 0, out_b = 0, peer = -1;
    bool ok = true;
    try {
      const size_t base = stack->size() - size_t(sp.nargs);
      const c10::IValue* a = stack->data() + base;
      pg = a[sp.pg].toCustomClass<c10d::ProcessGroup>();
      if (sp.single_code >= 0 && a[sp.single_arg].isList() && a[sp.single_arg].toListRef().size() == 1)
        op_code = sp.single_code;
      for (int i : sp.inputs) sizes(a[i], in_n, in_b, dtype);
      for (int i : sp.outputs) sizes(a[i], out_n, out_b, out_dtype);
      if (sp.peer >= 0 && a[sp.peer].isInt()) peer = a[sp.peer].toInt();
    } catch (const std::exception& exc) {
      ok = false;
      note_error("collective", exc.what());
    }
    const int64_t t0 = now();
    try {
      op.redispatchBoxed(below, stack);
    } catch (...) {
      const int64_t t1 = now();
      if (ok) record(pg, op_code, dtype < 0 ? out_dtype : dtype, peer, in_n, in_b, out_n, out_b,
                     c10::intrusive_ptr<c10d::Work>(), t0, t1, s.k.failed);
      s.self_ns.fetch_add((t0 - e0) + (now() - t1), std::memory_order_relaxed);
      throw;
    }
    const int64_t t1 = now();
    if (ok) {
      c10::intrusive_ptr<c10d::Work> work;
      try {
        if (sp.work_index != -2) {
          const c10::IValue& w = (*stack)[stack->size() - size_t(sp.nrets) +
                                          size_t(sp.work_index < 0 ? 0 : sp.work_index)];
          if (!w.isNone()) work = w.toCustomClass<c10d::Work>();
        }
      } catch (const std::exception& exc) {
        note_error("collective", exc.what());
      }
      record(pg, op_code, dtype < 0 ? out_dtype : dtype, peer, in_n, in_b, out_n, out_b,
             std::move(work), t0, t1, 0);
    }
    s.self_ns.fetch_add((t0 - e0) + (now() - t1), std::memory_order_relaxed);
  }

  void record(const c10::intrusive_ptr<c10d::ProcessGroup>& pg, int op_code, int dtype, int64_t peer,
              int64_t in_n, int64_t in_b, int64_t out_n, int64_t out_b,
              c10::intrusive_ptr<c10d::Work> work, int64_t t0, int64_t t1, uint8_t flags) noexcept {
    State& s = S();
    std::vector<c10::intrusive_ptr<c10d::Work>> drop;  // released after unlocking
    try {
      if (s.fault.load(std::memory_order_relaxed)) throw std::runtime_error("injected fault: collective");
      const uint32_t gid = group_id(pg);
      if (s.in_backward.load(std::memory_order_relaxed)) flags |= s.k.in_backward;
      const int64_t rid = s.next_rid.fetch_add(1, std::memory_order_relaxed);
      int64_t seq;
      bool want_future = false;
      const char* wtype = nullptr;
      {
        std::lock_guard<std::mutex> g(s.mu);
        seq = s.seq[gid][sp.p2p ? 1 : 0]++;
        if (work) {
          release_locked(s, drop);
          s.pending.push_back(Pending{work.get(), work, rid, false});
          wtype = typeid(*work).name();
          want_future = true;
          for (const auto& nf : s.no_future)
            if (nf.first == op_code && nf.second == wtype) { want_future = false; break; }
        }
      }
      // The future first, its callback after the COLL record is in: a DONE never precedes its COLL
      // (an already completed future runs the callback inline).
      c10::intrusive_ptr<c10::ivalue::Future> fut;
      if (want_future) {  // outside the lock: a backend's getFuture
        try {
          fut = work->getFuture();
        } catch (const std::exception&) {  // "Work::getFuture not implemented" (gloo send/recv, ...)
          std::lock_guard<std::mutex> g(s.mu);
          s.no_future.emplace_back(op_code, wtype);
        }
        if (fut) flags |= s.k.has_future;
      }
      const bool has_future = bool(fut);
      Coll c{rid, uint16_t(op_code), gid, seq,
             dtype >= 0 && dtype < 256 ? s.dtype_code[dtype] : uint8_t(0), flags, int32_t(peer),
             in_n, in_b, out_n, out_b, uint64_t(pthread_self()), t0, t1};
      bool sweep = false, direct = false;
      {
        std::lock_guard<std::mutex> g(s.mu);
        if (has_future)
          for (Pending& p : s.pending)
            if (p.rid == rid) { p.has_future = true; break; }
        direct = s.direct.load(std::memory_order_relaxed);
        if (direct) {
          s.records.fetch_add(1, std::memory_order_relaxed);
        } else if (s.coll.size() < kMaxBuffered) {
          s.coll.push_back(c);
          s.records.fetch_add(1, std::memory_order_relaxed);
        } else {
          s.dropped.fetch_add(1, std::memory_order_relaxed);
        }
        sweep = s.pending.size() >= kSoftCap;
      }
      if (direct) {
        const CollRecord cr = packed(c);
        region_put_or_note(s.k.kind_coll, &cr, sizeof cr);
      }
      if (fut) {
        c10d::Work* key = work.get();
        const uint8_t src = s.k.done_future;
        fut->addCallback([rid, key, src](c10::ivalue::Future&) {
          State& st = S();
          Done d{rid, now(), src};
          std::lock_guard<std::mutex> g(st.done_mu);
          if (st.direct.load(std::memory_order_relaxed)) {
            const DoneRecord dr = packed(d);
            region_put_or_note(st.k.kind_done, &dr, sizeof dr);
          } else {
            st.done.push_back(d);
          }
          st.completed.push_back(key);
        }, /*uses_future=*/false);  // a timestamp only: no device guard, no stream synchronisation
      }
      if (sweep) sweep_finished(s);
    } catch (const std::exception& exc) {
      note_error("collective", exc.what());
    }
  }
};

// _c10d_functional::wait_tensor (functional collectives, DTensor): the WAIT span of a wait issued
// on a tensor, with no record id (the Python path's wait_tensor kernel, in C++).  Skipped inside
// funcol.wait_tensor's Python wrapper, which times the same wait itself.
void append_wait_tensor(const WaitRecord& w) {
  State& s = S();
  {
    std::lock_guard<std::mutex> g(s.mu);
    if (!s.direct.load(std::memory_order_relaxed)) {
      if (s.waits.size() < kMaxBuffered) s.waits.push_back(w);
      else s.dropped.fetch_add(1, std::memory_order_relaxed);
      return;
    }
  }
  region_put_or_note(s.k.kind_wait, &w, sizeof w);
}

struct WaitTensorKernel final : c10::OperatorKernel {
  void operator()(const c10::OperatorHandle& op, c10::DispatchKeySet ks, torch::jit::Stack* stack) {
    State& s = S();
    const c10::DispatchKeySet below = ks & c10::after_ADInplaceOrView_keyset;
    if (!s.enabled.load(std::memory_order_relaxed) || s.in_py_wait.load(std::memory_order_relaxed)) {
      op.redispatchBoxed(below, stack);
      return;
    }
    const int64_t t0 = now();
    try {
      op.redispatchBoxed(below, stack);
    } catch (...) {
      if (s.enabled.load(std::memory_order_relaxed))
        append_wait_tensor(WaitRecord{-1, uint64_t(pthread_self()), t0, now(), s.k.wait_tensor});
      throw;
    }
    const int64_t t1 = now();
    if (s.enabled.load(std::memory_order_relaxed))
      append_wait_tensor(WaitRecord{-1, uint64_t(pthread_self()), t0, t1, s.k.wait_tensor});
    s.self_ns.fetch_add(now() - t1, std::memory_order_relaxed);
  }
};

void install_wait_tensor(int source) {
  State& s = S();
  s.k.wait_tensor = uint8_t(source);
  auto lib = std::make_unique<torch::Library>(torch::Library::IMPL, "_c10d_functional",
                                              c10::DispatchKey::ADInplaceOrView, __FILE__, __LINE__);
  lib->impl("wait_tensor", torch::CppFunction::makeFromBoxedFunctor(std::make_unique<WaitTensorKernel>()));
  s.funcol_lib = std::move(lib);
}

// -- Python-facing --------------------------------------------------------------------------
void install(py::list specs, py::object register_group) {
  State& s = S();
  if (s.register_group == nullptr) s.register_group = new py::object(register_group);
  else *s.register_group = register_group;
  auto lib = std::make_unique<torch::Library>(torch::Library::IMPL, "c10d",
                                              c10::DispatchKey::ADInplaceOrView, __FILE__, __LINE__);
  for (py::handle h : specs) {
    py::tuple t = h.cast<py::tuple>();
    Spec sp;
    std::string name = t[0].cast<std::string>();
    sp.op_code = t[1].cast<int>();
    sp.single_code = t[2].cast<int>();
    sp.single_arg = t[3].cast<int>();
    sp.p2p = t[4].cast<bool>();
    sp.nargs = t[5].cast<int>();
    sp.pg = t[6].cast<int>();
    sp.inputs = t[7].cast<std::vector<int>>();
    sp.outputs = t[8].cast<std::vector<int>>();
    sp.peer = t[9].cast<int>();
    sp.work_index = t[10].cast<int>();
    sp.nrets = t[11].cast<int>();
    lib->impl(name.c_str(), torch::CppFunction::makeFromBoxedFunctor(std::make_unique<Kernel>(sp)));
  }
  s.coll.reserve(kReserve);
  s.coll_spare.reserve(kReserve);
  s.done.reserve(kReserve);
  s.done_spare.reserve(kReserve);
  s.pending.reserve(kHardCap + 1);
  s.lib = std::move(lib);
  s.enabled = true;
}

void uninstall() {
  State& s = S();
  s.enabled = false;
  s.lib.reset();  // unregisters the kernels
  s.funcol_lib.reset();
}

// Hands one record to the Recorder (its sink's append: a list, or the capture file's region);
// steals `row`.  A failing append is counted, never raised into the flusher.
void append(PyObject* fn, PyObject* row) {
  PyObject* r = PyObject_CallOneArg(fn, row);
  Py_DECREF(row);
  if (r == nullptr) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject* text = value ? PyObject_Str(value) : nullptr;
    const char* msg = text ? PyUnicode_AsUTF8(text) : nullptr;
    note_error("native.drain", msg ? msg : "append failed");
    PyErr_Clear();
    Py_XDECREF(text);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return;
  }
  Py_DECREF(r);
}

// One kind of buffered record, taken out of the shared buffer under State::mu (and done_mu) by
// drain(): `rows` then holds what was buffered, the shared buffer is empty, and nothing shared is
// touched while the rows are handed to Python.  The empty buffer swapped in is the spare one (its
// capacity kept from the last drain: no allocation in steady state); a drain nested in another
// (SIGTERM's close interrupting a flush on the same thread) finds the spare taken and swaps in a
// new empty vector, so it sees only what arrived after the outer drain began.
template <typename T>
struct Taken {
  std::vector<T> rows;
  void take(std::vector<T>& shared, std::vector<T>& spare) {
    rows.swap(spare);   // the spare's capacity, empty (or nothing, if a drain holds it)
    rows.swap(shared);  // the records; the shared buffer gets the empty one
  }
  // Back under the lock, emptied: the next drain reuses the largest buffer.
  void give_back(std::vector<T>& spare) {
    rows.clear();
    if (rows.capacity() > spare.capacity()) rows.swap(spare);
  }
};

PyObject* coll_tuple(const Coll& c) {
  PyObject* t = PyTuple_New(14);
  PyTuple_SET_ITEM(t, 0, PyLong_FromLongLong(c.rid));
  PyTuple_SET_ITEM(t, 1, PyLong_FromLong(c.op));
  PyTuple_SET_ITEM(t, 2, PyLong_FromUnsignedLong(c.gid));
  PyTuple_SET_ITEM(t, 3, PyLong_FromLongLong(c.seq));
  PyTuple_SET_ITEM(t, 4, PyLong_FromLong(c.dtype));
  PyTuple_SET_ITEM(t, 5, PyLong_FromLong(c.flags));
  PyTuple_SET_ITEM(t, 6, PyLong_FromLong(c.peer));
  PyTuple_SET_ITEM(t, 7, PyLong_FromLongLong(c.in_n));
  PyTuple_SET_ITEM(t, 8, PyLong_FromLongLong(c.in_b));
  PyTuple_SET_ITEM(t, 9, PyLong_FromLongLong(c.out_n));
  PyTuple_SET_ITEM(t, 10, PyLong_FromLongLong(c.out_b));
  PyTuple_SET_ITEM(t, 11, PyLong_FromUnsignedLongLong(c.thread));
  PyTuple_SET_ITEM(t, 12, PyLong_FromLongLong(c.t0));
  PyTuple_SET_ITEM(t, 13, PyLong_FromLongLong(c.t1));
  return t;
}

PyObject* done_tuple(const Done& d) {
  PyObject* t = PyTuple_New(3);
  PyTuple_SET_ITEM(t, 0, PyLong_FromLongLong(d.rid));
  PyTuple_SET_ITEM(t, 1, PyLong_FromLongLong(d.t));
  PyTuple_SET_ITEM(t, 2, PyLong_FromLong(d.source));
  return t;
}

PyObject* wait_tuple(const WaitRecord& w) {
  PyObject* t = PyTuple_New(5);
  PyTuple_SET_ITEM(t, 0, PyLong_FromLongLong(w.id));
  PyTuple_SET_ITEM(t, 1, PyLong_FromUnsignedLongLong(w.thread));
  PyTuple_SET_ITEM(t, 2, PyLong_FromLongLong(w.t_start));
  PyTuple_SET_ITEM(t, 3, PyLong_FromLongLong(w.t_end));
  PyTuple_SET_ITEM(t, 4, PyLong_FromLong(w.source));
  return t;
}

// Re-entrant (see Taken): the records are handed to Python from local vectors only.
py::tuple drain(py::object coll_append, py::object done_append, py::object wait_append) {
  State& s = S();
  std::map<std::string, std::pair<int64_t, std::string>> errors;
  Taken<Coll> coll;
  Taken<Done> done;
  Taken<WaitRecord> waits;
  {
    std::lock_guard<std::mutex> g(s.mu);  // both under mu: a DONE never precedes its COLL
    std::lock_guard<std::mutex> g2(s.done_mu);
    coll.take(s.coll, s.coll_spare);
    done.take(s.done, s.done_spare);
    if (!wait_append.is_none()) waits.take(s.waits, s.waits_spare);
    errors.swap(s.errors);
  }
  for (const Coll& c : coll.rows) append(coll_append.ptr(), coll_tuple(c));
  for (const Done& d : done.rows) append(done_append.ptr(), done_tuple(d));
  for (const WaitRecord& w : waits.rows) append(wait_append.ptr(), wait_tuple(w));
  const size_t n = coll.rows.size();
  {
    std::lock_guard<std::mutex> g(s.mu);
    std::lock_guard<std::mutex> g2(s.done_mu);
    coll.give_back(s.coll_spare);
    done.give_back(s.done_spare);
    waits.give_back(s.waits_spare);
  }
  py::list errs;
  for (auto& kv : errors) errs.append(py::make_tuple(kv.first, kv.second.first, kv.second.second));
  return py::make_tuple(n, s.records.load(), s.self_ns.load(), s.dropped.load(), errs);
}

// -- the region, Python-facing (commprof/format/region.py: RegionWriter(native=...)) ----------
// Takes over `fd` (the file holds its header up to `start`, a chunk boundary), maps the first
// chunk, writes the records buffered so far, and from then on the kernel appends directly.
int region_open(int fd, int64_t start, int64_t chunk) {
  State& s = S();
  Region& r = R();
  std::lock_guard<std::mutex> g(s.mu);
  std::lock_guard<std::mutex> g2(s.done_mu);
  {
    std::lock_guard<std::mutex> g3(r.mu);
    if (r.open.load() || r.fd >= 0) return EBUSY;
    r.fd = fd; r.chunk = chunk; r.file_end = start; r.base = start; r.end = 0; r.pos = 0;
    r.map = nullptr; r.error = 0;
    const int e = region_grow(r, 1);
    if (e) { r.fd = -1; return e; }
    r.open = true;
  }
  for (const Coll& c : s.coll) {
    const CollRecord cr = packed(c);
    region_put_or_note(s.k.kind_coll, &cr, sizeof cr);
  }
  for (const Done& d : s.done) {
    const DoneRecord dr = packed(d);
    region_put_or_note(s.k.kind_done, &dr, sizeof dr);
  }
  for (const WaitRecord& w : s.waits) region_put_or_note(s.k.kind_wait, &w, sizeof w);
  s.coll.clear();
  s.done.clear();
  s.waits.clear();
  s.direct = true;
  return 0;
}

// Appends one frame from Python; 0, -1 (closed) or an errno.
int region_append(int kind, py::buffer payload) {
  py::buffer_info info = payload.request();
  return region_put(uint8_t(kind), info.ptr, uint32_t(info.size * info.itemsize));
}

int64_t region_bytes() {
  Region& r = R();
  std::lock_guard<std::mutex> g(r.mu);
  return r.base + r.pos;
}

void region_stop(Region& r, bool truncate) {
  r.open = false;
  S().direct = false;  // kernel records buffer again (and are dropped: recording is over)
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

// -- Work.wait ------------------------------------------------------------------------------
// torch's Work.wait replaced by a C callable (make_wait): one call per wait, no Python frame and
// no pybind dispatch on the per-wait path.  It times torch's wait, tells whether its caller is
// one of torch.distributed's own functions (the wait of a blocking async_op=False call: the
// caller's code object is one of distributed_c10d's) or the user's, forgets the Work's pending
// record and, in the region's direct mode, appends the WAIT record (and the DONE one when no
// future gives completion).  What it cannot append -- before the region opens, or a Work the
// kernel did not record -- it hands to a Python fallback (NativeHooks._wait_fallback).  Its own
// time after the wait returns goes into self_ns, as the kernel's does.
struct WaitHook {
  PyObject_HEAD
  vectorcallfunc vectorcall;
  PyObject* original;  // torch's Work.wait
  PyObject* fallback;  // (work, t0, t1, source, rid or None, has_future) -> None
  PyObject* doc;
  std::vector<PyObject*>* api_codes;  // sorted; strong references
  uint8_t sync_api, work_api;
};

// Forgets the pending record of a Work the kernel recorded: false when it has none.
bool take_pending(c10d::Work* key, int64_t& rid, bool& has_future, bool& direct) {
  State& s = S();
  bool found = false;
  c10::intrusive_ptr<c10d::Work> drop;  // the caller holds the Work: never the last reference
  std::lock_guard<std::mutex> g(s.mu);
  for (size_t i = 0; i < s.pending.size(); ++i) {
    if (s.pending[i].key == key) {
      rid = s.pending[i].rid;
      has_future = s.pending[i].has_future;
      drop = std::move(s.pending[i].ref);
      s.pending[i] = std::move(s.pending.back());
      s.pending.pop_back();
      found = true;
      break;
    }
  }
  direct = s.direct.load(std::memory_order_relaxed);
  return found;
}

bool called_by_api(const WaitHook* h) {
  PyFrameObject* frame = PyEval_GetFrame();  // the caller's (borrowed)
  if (frame == nullptr) return false;
  PyObject* code = reinterpret_cast<PyObject*>(PyFrame_GetCode(frame));
  const bool hit = std::binary_search(h->api_codes->begin(), h->api_codes->end(), code);
  Py_DECREF(code);
  return hit;
}

c10d::Work* work_of(PyObject* obj) {
  try {
    return py::handle(obj).cast<c10d::Work*>();
  } catch (const std::exception&) {  // not a c10d Work: the fallback decides
    return nullptr;
  }
}

void waited(const WaitHook* h, PyObject* work, int64_t t0, int64_t t1, uint8_t source) {
  State& s = S();
  int64_t rid = -1;
  bool has_future = false, direct = false;
  c10d::Work* key = work_of(work);
  const bool known = key != nullptr && take_pending(key, rid, has_future, direct);
  if (known && direct) {
    const WaitRecord w{rid, uint64_t(pthread_self()), t0, t1, source};
    region_put_or_note(s.k.kind_wait, &w, sizeof w);
    if (rid >= 0 && !has_future) {
      const DoneRecord d{rid, t1, s.k.done_wait};
      region_put_or_note(s.k.kind_done, &d, sizeof d);
    }
    return;
  }
  PyObject* r = known
      ? PyObject_CallFunction(h->fallback, "OLLbLO", work, (long long)t0, (long long)t1, source,
                              (long long)rid, has_future ? Py_True : Py_False)
      : PyObject_CallFunction(h->fallback, "OLLbOO", work, (long long)t0, (long long)t1, source,
                              Py_None, Py_False);
  if (r == nullptr) {  // never the job's: counted, shown by the report
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyObject* text = ev ? PyObject_Str(ev) : nullptr;
    const char* msg = text ? PyUnicode_AsUTF8(text) : nullptr;
    note_error("work.wait", msg ? msg : "the wait fallback failed");
    Py_XDECREF(text);
    Py_XDECREF(et); Py_XDECREF(ev); Py_XDECREF(tb);
    PyErr_Clear();
  }
  Py_XDECREF(r);
}

PyObject* wait_hook_call(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
  const WaitHook* h = reinterpret_cast<WaitHook*>(self);
  State& s = S();
  const int64_t t0 = now();
  PyObject* out = PyObject_Vectorcall(h->original, args, nargsf, kwnames);
  if (PyVectorcall_NARGS(nargsf) < 1 || !s.enabled.load(std::memory_order_relaxed)) return out;
  const int64_t t1 = now();
  PyObject *et, *ev, *tb;
  PyErr_Fetch(&et, &ev, &tb);  // torch's wait may have raised: its exception passes through
  waited(h, args[0], t0, t1, called_by_api(h) ? h->sync_api : h->work_api);
  PyErr_Restore(et, ev, tb);
  s.self_ns.fetch_add(now() - t1, std::memory_order_relaxed);
  return out;
}

PyObject* wait_hook_get(PyObject* self, PyObject* obj, PyObject*) {
  if (obj == nullptr || obj == Py_None) {
    Py_INCREF(self);
    return self;
  }
  return PyMethod_New(self, obj);
}

void wait_hook_dealloc(PyObject* self) {
  WaitHook* h = reinterpret_cast<WaitHook*>(self);
  Py_XDECREF(h->original);
  Py_XDECREF(h->fallback);
  Py_XDECREF(h->doc);
  if (h->api_codes) {
    for (PyObject* c : *h->api_codes) Py_DECREF(c);
    delete h->api_codes;
  }
  Py_TYPE(self)->tp_free(self);
}

PyMemberDef kWaitMembers[] = {
    {const_cast<char*>("__commprof_original__"), T_OBJECT, offsetof(WaitHook, original), READONLY, nullptr},
    {const_cast<char*>("__wrapped__"), T_OBJECT, offsetof(WaitHook, original), READONLY, nullptr},
    {const_cast<char*>("__doc__"), T_OBJECT, offsetof(WaitHook, doc), READONLY, nullptr},
    {nullptr, 0, 0, 0, nullptr}};

PyTypeObject WaitHookType = {PyVarObject_HEAD_INIT(nullptr, 0)};

void init_wait_type() {
  WaitHookType.tp_name = "commprof_native.WorkWait";
  WaitHookType.tp_basicsize = sizeof(WaitHook);
  // METHOD_DESCRIPTOR: work.wait() calls it with the Work first, without a bound method.
  WaitHookType.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR;
  WaitHookType.tp_vectorcall_offset = offsetof(WaitHook, vectorcall);
  WaitHookType.tp_call = PyVectorcall_Call;
  WaitHookType.tp_descr_get = wait_hook_get;
  WaitHookType.tp_dealloc = wait_hook_dealloc;
  WaitHookType.tp_members = kWaitMembers;
  WaitHookType.tp_doc = "torch's Work.wait, timed and recorded by commprof's native kernel";
  if (PyType_Ready(&WaitHookType) < 0) throw py::error_already_set();
}

// make_wait(original, api_codes, fallback, sync_api, work_api) -> the Work.wait to install.
py::object make_wait(py::object original, py::list api_codes, py::object fallback, int sync_api,
                     int work_api) {
  WaitHook* h = PyObject_New(WaitHook, &WaitHookType);
  if (h == nullptr) throw py::error_already_set();
  h->vectorcall = &wait_hook_call;
  h->original = original.inc_ref().ptr();
  h->fallback = fallback.inc_ref().ptr();
  h->doc = py::getattr(original, "__doc__", py::none()).inc_ref().ptr();
  h->api_codes = new std::vector<PyObject*>();
  for (py::handle c : api_codes) h->api_codes->push_back(c.inc_ref().ptr());
  std::sort(h->api_codes->begin(), h->api_codes->end());
  h->sync_api = uint8_t(sync_api);
  h->work_api = uint8_t(work_api);
  return py::reinterpret_steal<py::object>(reinterpret_cast<PyObject*>(h));
}

void release_all() {
  State& s = S();
  std::vector<Pending> drop;
  {
    std::lock_guard<std::mutex> g(s.mu);
    drop.swap(s.pending);
  }
  std::lock_guard<std::mutex> g(s.done_mu);
  s.completed.clear();
}

int64_t next_seq(int64_t gid, bool p2p) {
  State& s = S();
  std::lock_guard<std::mutex> g(s.mu);
  if (s.seq.size() <= size_t(gid)) s.seq.resize(gid + 1, {0, 0});
  return s.seq[gid][p2p ? 1 : 0]++;
}

void set_dtype_codes(py::list pairs) {
  for (py::handle h : pairs) {
    py::tuple t = h.cast<py::tuple>();
    int st = int(t[0].cast<at::Tensor>().scalar_type());
    if (st >= 0 && st < 256) S().dtype_code[st] = uint8_t(t[1].cast<int>());
  }
}

void child_after_fork() { S().enabled.store(false); }

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("install", &install, "register the kernels: specs from OpSpec, register_group(pg) -> gid");
  m.def("uninstall", &uninstall);
  m.def("drain", &drain, "hand buffered COLL/DONE/WAIT tuples to the appends (wait_append None: "
        "the WAITs stay buffered); -> (n, records, self_ns, dropped, errors)",
        py::arg("coll_append"), py::arg("done_append"), py::arg("wait_append") = py::none());
  m.def("install_wait_tensor", &install_wait_tensor, "register the _c10d_functional::wait_tensor kernel: (source)");
  m.def("release_all", &release_all);
  m.def("next_seq", &next_seq);
  m.def("next_id", []() { return S().next_rid.fetch_add(1); });
  m.def("set_dtype_codes", &set_dtype_codes);
  m.def("set_constants", [](int hf, int ib, int fl, int df, int kc, int kd, int kw, int dw) {
    S().k = Constants{uint8_t(hf), uint8_t(ib), uint8_t(fl), uint8_t(df), uint8_t(kc), uint8_t(kd),
                      uint8_t(kw), uint8_t(dw)};
  });
  m.def("make_wait", &make_wait, "(original, api_codes, fallback, sync_api, work_api) -> the native Work.wait");
  m.def("set_clock_skew", [](int64_t ns) { S().skew = ns; });
  m.def("set_enabled", [](bool on) { S().enabled.store(on); });
  m.def("set_fault", [](bool on) { S().fault.store(on); });
  m.def("set_in_backward", [](int v) { S().in_backward.store(v); });
  m.def("get_in_backward", []() { return S().in_backward.load(); });
  m.def("set_in_py_wait", [](int v) { S().in_py_wait.store(v); });
  m.def("get_in_py_wait", []() { return S().in_py_wait.load(); });
  m.def("clock", []() { return now(); });
  m.def("region_open", &region_open, "take over a capture file's fd: (fd, start, chunk) -> 0 or errno");
  m.def("region_append", &region_append, "(kind, payload) -> 0, -1 (closed) or errno");
  m.def("region_bytes", &region_bytes);
  m.def("region_close", &region_close);
  m.def("region_abandon", &region_abandon);
  m.def("region_is_open", []() { return R().open.load(); });
  m.def("region_error", []() { return R().error.exchange(0); }, "the first failed kernel append's errno (0: none); clears it");
  m.def("region_fail_after", [](int grows, int err) { std::lock_guard<std::mutex> g(R().mu);
        R().fail_after_grows = grows; R().fail_errno = err; }, "fault injection: grows that succeed before each fails with err");
  m.def("record_sizes", []() { return py::make_tuple(sizeof(CollRecord), sizeof(DoneRecord), sizeof(WaitRecord)); });
  m.def("pending_count", []() { std::lock_guard<std::mutex> g(S().mu); return S().pending.size(); });
  crc_init();
  init_wait_type();
  pthread_atfork(nullptr, nullptr, &child_after_fork);
}
