"""spark-submit entry point: the profile stage (gold.segment_profile). See lib/gridpersona/app/jobs.py.

Not named profile.py: Python puts this folder first on sys.path, and a jobs/profile.py would
shadow the standard library's `profile` module, which pyspark imports (via cProfile) at start-up.
"""

import sys

from gridpersona.app.jobs import main

if __name__ == "__main__":
    sys.exit(main("profile"))
