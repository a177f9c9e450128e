"""``accelerate launch -m interestbert.finetune --card ... --output_dir ...``"""

import sys

from .train import main

sys.exit(main())
