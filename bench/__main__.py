"""`make bench`: every benchmark, printing figures. Not part of the test run."""

from bench import throughput

throughput.main()
