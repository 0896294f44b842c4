# commprof bootstrap: `commprof run` puts this directory first on PYTHONPATH so that every Python
# process of the job runs it.  It must never raise, and it chain-loads the sitecustomize it shadows.
def _commprof_bootstrap():
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    try:
        # The one COMMPROF_* variable read outside capture/config.py: checked before any import,
        # so that a process that is not to be captured pays nothing.
        if os.environ.get("COMMPROF_RUN_DIR"):
            from commprof.capture import bootstrap
            bootstrap.activate()
    except Exception as exc:  # the user's interpreter must start regardless
        try:
            sys.stderr.write("commprof: capture disabled in pid %d: %s\n" % (os.getpid(), exc))
        except Exception:  # stderr itself is unusable: nothing else to tell
            return
    # Chain-load the sitecustomize this one shadows, exactly as Python would have.
    import importlib.machinery
    import importlib.util

    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        sys.modules["sitecustomize"] = module
        spec.loader.exec_module(module)


_commprof_bootstrap()
del _commprof_bootstrap
