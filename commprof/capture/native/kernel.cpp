// commprof native capture kernel: the boxed kernel on every c10d:: operator commprof knows and
// the _c10d_functional::wait_tensor kernel, with the state and buffers they share (capture.h).
#include "capture.h"

#include <typeinfo>

namespace commprof_native {

void note_error(const std::string& where, const std::string& msg) {
  State& s = S();
  std::lock_guard<std::mutex> g(s.mu);
  auto& e = s.errors[where];
  if (e.first++ == 0) e.second = msg;
}

namespace {

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
uint32_t group_id(const c10::intrusive_ptr<c10d::ProcessGroup>& pg, bool& registered) {
  State& s = S();
  {
    std::lock_guard<std::mutex> g(s.mu);
    for (const Group& e : s.groups)
      if (e.ptr == pg.get()) return e.gid;
  }
  if (!Py_IsInitialized() || COMMPROF_FINALIZING()) throw std::runtime_error("interpreter finalizing");
  int64_t gid;
  registered = true;
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
      bool registered = false;
      if (ok) record(pg, op_code, dtype < 0 ? out_dtype : dtype, peer, in_n, in_b, out_n, out_b,
                     c10::intrusive_ptr<c10d::Work>(), t0, t1, s.k.failed, registered);
      add_own((t0 - e0) + (now() - t1), registered, true);
      throw;
    }
    const int64_t t1 = now();
    bool registered = false;
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
             std::move(work), t0, t1, 0, registered);
    }
    add_own((t0 - e0) + (now() - t1), registered, true);
  }

  void record(const c10::intrusive_ptr<c10d::ProcessGroup>& pg, int op_code, int dtype, int64_t peer,
              int64_t in_n, int64_t in_b, int64_t out_n, int64_t out_b,
              c10::intrusive_ptr<c10d::Work> work, int64_t t0, int64_t t1, uint8_t flags,
              bool& registered) noexcept {
    State& s = S();
    std::vector<c10::intrusive_ptr<c10d::Work>> drop;  // released after unlocking
    try {
      if (s.fault.load(std::memory_order_relaxed)) throw std::runtime_error("injected fault: collective");
      const uint32_t gid = group_id(pg, registered);
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
        direct = R().direct.load(std::memory_order_relaxed);
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
          if (R().direct.load(std::memory_order_relaxed)) {
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
    if (!R().direct.load(std::memory_order_relaxed)) {
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
    add_own(now() - t1, false, false);
  }
};


}  // namespace

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

// -- the region takes over the buffers (commprof/format/region.py: RegionWriter(native=...)) --
// Takes over `fd` (the file holds its header up to `start`, a chunk boundary), maps the first
// chunk, writes the records buffered so far, and from then on the kernel appends directly.
int region_open(int fd, int64_t start, int64_t chunk) {
  State& s = S();
  std::lock_guard<std::mutex> g(s.mu);
  std::lock_guard<std::mutex> g2(s.done_mu);
  const int e = region_start(fd, start, chunk);
  if (e) return e;
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
  R().direct = true;
  return 0;
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

}  // namespace commprof_native
