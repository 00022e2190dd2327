import sys

from .allocator import keep_freed_memory
from .cli import main

keep_freed_memory()
sys.exit(main())
