"""spark-submit entry point: the tags stage. See lib/gridpersona/jobs.py."""

import sys

from gridpersona.jobs import main

if __name__ == "__main__":
    sys.exit(main("tags"))
