"""`python -m cegppo.trainer` == `cegppo-train`; also `torchrun --nproc_per_node=N -m cegppo.trainer ...`."""

import sys

from ._cli import main

sys.exit(main())
