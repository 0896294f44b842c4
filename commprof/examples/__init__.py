"""Example jobs shipped with commprof (run as scripts, never imported by commprof)."""
