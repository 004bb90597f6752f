"""spark-submit entry point: the alerts stage (mid-cycle bill and vacancy alerts). See lib/gridpersona/app/jobs.py."""

import sys

from gridpersona.app.jobs import main

if __name__ == "__main__":
    sys.exit(main("alerts"))
