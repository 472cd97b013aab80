import sys

from sslzoo.select.cli import main

sys.exit(main())
