"""Root pytest configuration: make the checkout importable as the collection."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "tools"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "tests"))  # support.py

import collection_link  # noqa: E402

collection_link.expose()
