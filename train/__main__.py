"""`python -m train` (also under `deepspeed`, `torchrun` and `accelerate launch`)."""
import sys

from train.train import main

if __name__ == "__main__":
    sys.exit(main())
