import sys

from collector.awslambda.extension.extension import main

sys.exit(main())
