"""`make bench`: every benchmark, printing figures. Not part of the test run."""

from bench import sketch, throughput

sketch.main([])
throughput.main()
