import sys

from mindxh.cli.main import main

sys.exit(main())
