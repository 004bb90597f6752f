"""spark-submit entry point: the advice stage (rate advisor, similar homes). See lib/gridpersona/app/jobs.py."""

import sys

from gridpersona.app.jobs import main

if __name__ == "__main__":
    sys.exit(main("advice"))
