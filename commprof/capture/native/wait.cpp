// commprof native capture kernel: torch's Work.wait replaced by a C callable (make_wait).
#include "capture.h"

#include <structmember.h>

#include <algorithm>

namespace commprof_native {

namespace {

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
  direct = R().direct.load(std::memory_order_relaxed);
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
  add_own(now() - t1, false, false);
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


}  // namespace

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

}  // namespace commprof_native
