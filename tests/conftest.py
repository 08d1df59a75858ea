import os
import sys

# tests import helpers that live next to them (naive_fsa.py) and the package from the repo root
sys.path.insert(0, os.path.dirname(__file__))
