// commprof native capture kernel: the Python module -- drain() hands the buffered records to the
// recorder; every function commprof/capture/native/hooks.py and format/region.py call.
#include "capture.h"

#include <algorithm>

namespace commprof_native {
namespace {

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
// drain(): `rows` then holds what was buffered and the shared buffer is empty.  The empty buffer
// swapped in is the spare one (its capacity kept from the last drain: no allocation in steady
// state); while a drain holds the spare, another swaps in a new empty vector.
template <typename T>
struct Taken {
  std::vector<T> rows;
  size_t next = 0;  // the first row not handed over yet
  void take(std::vector<T>& shared, std::vector<T>& spare) {
    rows.swap(spare);   // the spare's capacity, empty (or nothing, if a drain holds it)
    rows.swap(shared);  // the records; the shared buffer gets the empty one
  }
  // Back under the lock, emptied: the next drain reuses the largest buffer.
  void give_back(std::vector<T>& spare) {
    rows.clear();
    if (rows.capacity() > spare.capacity()) rows.swap(spare);
  }
  bool left() const { return next < rows.size(); }
};

// What one drain() took; listed in drains_in_progress() while it hands its records over.
struct Batch {
  Taken<Coll> coll;
  Taken<Done> done;
  Taken<WaitRecord> waits;
};

// The batches of the drains in progress, oldest first.  Read and changed with the GIL held only
// (never across a call into Python): a drain nested in another -- SIGTERM's close interrupting a
// flush, on the same thread -- or one on another thread while the first calls into Python.
std::vector<Batch*>& drains_in_progress() {
  static auto* batches = new std::vector<Batch*>();
  return *batches;
}

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

// Hands over the next record of the oldest batch that has one left (its COLLs, then its DONEs,
// then its WAITs when wait_fn is given): false when none is left.  The row is copied and the
// batch's cursor moved before Python runs, so a drain that runs inside that call hands over
// what is left, and no row is handed over twice.
bool hand_over_next(PyObject* coll_fn, PyObject* done_fn, PyObject* wait_fn, size_t& n_coll) {
  for (Batch* b : drains_in_progress()) {
    if (b->coll.left()) {
      const Coll c = b->coll.rows[b->coll.next++];
      append(coll_fn, coll_tuple(c));
      ++n_coll;
      return true;
    }
    if (b->done.left()) {
      const Done d = b->done.rows[b->done.next++];
      append(done_fn, done_tuple(d));
      return true;
    }
    if (wait_fn != nullptr && b->waits.left()) {
      const WaitRecord w = b->waits.rows[b->waits.next++];
      append(wait_fn, wait_tuple(w));
      return true;
    }
  }
  return false;
}

// Re-entrant: what this call takes joins the batches in progress, and it hands over every record
// they hold, oldest first (what a drain it interrupted had not handed over yet, then its own).
// -> (COLLs this call handed over, records, self ns, dropped, errors).
py::tuple drain(py::object coll_append, py::object done_append, py::object wait_append) {
  State& s = S();
  std::map<std::string, std::pair<int64_t, std::string>> errors;
  Batch batch;
  {
    std::lock_guard<std::mutex> g(s.mu);  // both under mu: a DONE never precedes its COLL
    std::lock_guard<std::mutex> g2(s.done_mu);
    batch.coll.take(s.coll, s.coll_spare);
    batch.done.take(s.done, s.done_spare);
    if (!wait_append.is_none()) batch.waits.take(s.waits, s.waits_spare);
    errors.swap(s.errors);
  }
  std::vector<Batch*>& batches = drains_in_progress();
  batches.push_back(&batch);
  PyObject* wait_fn = wait_append.is_none() ? nullptr : wait_append.ptr();
  size_t n = 0;
  while (hand_over_next(coll_append.ptr(), done_append.ptr(), wait_fn, n)) {
  }
  // This batch is empty now (its WAITs were taken only with a wait_append to hand them to).
  batches.erase(std::find(batches.begin(), batches.end(), &batch));
  {
    std::lock_guard<std::mutex> g(s.mu);
    std::lock_guard<std::mutex> g2(s.done_mu);
    batch.coll.give_back(s.coll_spare);
    batch.done.give_back(s.done_spare);
    batch.waits.give_back(s.waits_spare);
  }
  py::list errs;
  for (auto& kv : errors) errs.append(py::make_tuple(kv.first, kv.second.first, kv.second.second));
  return py::make_tuple(n, s.records.load(), s.self_ns.load(), s.dropped.load(), errs);
}

// Appends one frame from Python; 0, -1 (closed) or an errno.
int region_append(int kind, py::buffer payload) {
  py::buffer_info info = payload.request();
  return region_put(uint8_t(kind), info.ptr, uint32_t(info.size * info.itemsize));
}

}  // namespace
}  // namespace commprof_native

using namespace commprof_native;

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("install", &install, "register the kernels: specs from OpSpec, register_group(pg) -> gid");
  m.def("uninstall", &uninstall);
  m.def("cost_split", []() {
    State& s = S();
    return py::make_tuple(s.once_calls.load(), s.once_ns.load(), s.stalled_calls.load(),
                          s.stalled_ns.load());
  }, "the part of self_ns that is not per-call work: (once_calls, once_ns, stalled_calls, "
     "stalled_ns)");
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
