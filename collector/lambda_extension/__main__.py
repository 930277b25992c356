import sys

from collector.lambda_extension.extension import main

sys.exit(main())
