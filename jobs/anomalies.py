"""spark-submit entry point: the anomalies stage (abnormal-use flags for inspection). See lib/gridpersona/app/jobs.py."""

import sys

from gridpersona.app.jobs import main

if __name__ == "__main__":
    sys.exit(main("anomalies"))
