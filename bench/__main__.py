"""`python -m bench`: run the unary-call benchmark and print its table."""

from bench.driver import main

raise SystemExit(main())
