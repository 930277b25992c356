"""`make bench`: every benchmark, printing figures. Not part of the test run."""

from bench import grpc_server, lambda_extension, lambda_overhead, live_view, sketch, throughput

sketch.main([])
live_view.main([])
throughput.main()
grpc_server.main([])
lambda_overhead.main([])
lambda_extension.main([])
