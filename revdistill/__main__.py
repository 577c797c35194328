"""``python -m revdistill`` (also what ``torchrun -m revdistill`` runs)."""
import sys

from revdistill.cli import main

sys.exit(main())
