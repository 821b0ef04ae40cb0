import sys
from nerf_lab.summarize import main

sys.exit(main())
