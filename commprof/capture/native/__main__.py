"""``python -m commprof.capture.native``: build the native kernel, print one JSON line."""
import sys

from commprof.capture.native import main

sys.exit(main())
