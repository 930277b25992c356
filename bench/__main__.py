"""`make bench`: every benchmark, printing figures. Not part of the test run."""

from bench import lambda_extension, lambda_overhead, live_view, sketch, throughput

sketch.main([])
live_view.main([])
throughput.main()
lambda_overhead.main([])
lambda_extension.main([])
