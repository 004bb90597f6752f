"""spark-submit entry point: the forecast stage (monthly kWh forecast per segment and region). See lib/gridpersona/app/jobs.py."""

import sys

from gridpersona.app.jobs import main

if __name__ == "__main__":
    sys.exit(main("forecast"))
