"""Runs a command, passes its output through, then prints its peak RSS: peak_rss_kib=N."""
import resource
import subprocess
import sys

code = subprocess.call(sys.argv[1:])
print(f"peak_rss_kib={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}", file=sys.stderr)
sys.exit(code)
