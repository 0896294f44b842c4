// commprof native capture kernel: what its files share (the records, the kernel's state, the
// functions one file defines and another calls).  The module is built from every .cpp beside this
// header (commprof/capture/native/__init__.py):
//   kernel.cpp         the boxed c10d:: kernel and the wait_tensor kernel, their state and buffers
//   wait.cpp           the Work.wait type (make_wait)
//   region_writer.cpp  the capture file's record region (region_writer.h: no torch in it)
//   bindings.cpp       drain() and the Python module
//
// Per call the kernel reads its arguments (before re-dispatching: the callee pops them),
// re-dispatches below ADInplaceOrView, and appends one fixed-size COLL record under a short lock:
// into the capture file's memory-mapped record region once it is open (region_*), before that
// into a buffer the region takes over (or that the flusher drains: drain()).  Completion comes
// from a C++ future callback (no GIL), or from Work.wait, which is this module's too (make_wait).
// What each record holds is exactly what commprof/capture/collectives.py records; the argument
// positions come from its OpSpec.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/ivalue.h>
#include <torch/library.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>
#include <torch/csrc/utils/pybind.h>

#include <pthread.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <typeinfo>
#include <vector>

#include "region_writer.h"

namespace py = pybind11;

#if PY_VERSION_HEX >= 0x030D0000
#define COMMPROF_FINALIZING() Py_IsFinalizing()
#else
#define COMMPROF_FINALIZING() _Py_IsFinalizing()
#endif

namespace commprof_native {

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
// A clocked window longer than this is not recording work (~1-3 us; the slowest part, the region
// append, stays under 10 us): the thread was descheduled or waited on a lock while in it
// (docs/performance.md, "The native kernel's clock inside a DDP job").
constexpr int64_t kStallNs = 50000;

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
  // self_ns split (add_own): the windows of the first call on a new group (its registration in
  // Python), and the windows longer than kStallNs (the thread off its core or waiting)
  std::atomic<int64_t> once_calls{0}, once_ns{0}, stalled_calls{0}, stalled_ns{0};
  std::atomic<int64_t> records{0};
  std::atomic<int64_t> dropped{0};
  std::atomic<bool> enabled{false};
  std::atomic<bool> fault{false};
  std::atomic<int> in_backward{0};
  std::atomic<int> in_py_wait{0};  // inside funcol.wait_tensor's Python wrapper (it times the wait)
  int64_t skew = 0;
  uint8_t dtype_code[256] = {0};
  Constants k;
  py::object* register_group = nullptr;  // Python: (ProcessGroup) -> group id; never freed
  std::unique_ptr<torch::Library> lib, funcol_lib;
};

// Never destroyed: gloo threads may still complete futures while the process exits.
inline State& S() { static State* s = new State(); return *s; }

inline int64_t now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000000000LL + ts.tv_nsec + S().skew;
}

// One clocked window of the kernel or of Work.wait (`own` ns) into self_ns and its split:
// `registered` when it registered a new group, `is_call` when it is a collective's (counted).
inline void add_own(int64_t own, bool registered, bool is_call) {
  State& s = S();
  s.self_ns.fetch_add(own, std::memory_order_relaxed);
  if (registered) {
    s.once_calls.fetch_add(1, std::memory_order_relaxed);
    s.once_ns.fetch_add(own, std::memory_order_relaxed);
  } else if (own > kStallNs) {
    if (is_call) s.stalled_calls.fetch_add(1, std::memory_order_relaxed);
    s.stalled_ns.fetch_add(own, std::memory_order_relaxed);
  }
}

// Counted, never raised: drain() hands the counts and each first message to the recorder.
void note_error(const std::string& where, const std::string& msg);

// kernel.cpp
void install(py::list specs, py::object register_group);
void uninstall();
void install_wait_tensor(int source);
void release_all();
int64_t next_seq(int64_t gid, bool p2p);
void set_dtype_codes(py::list pairs);
void child_after_fork();
int region_open(int fd, int64_t start, int64_t chunk);

// wait.cpp
void init_wait_type();
py::object make_wait(py::object original, py::list api_codes, py::object fallback, int sync_api,
                     int work_api);

}  // namespace commprof_native
