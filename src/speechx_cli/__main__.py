"""`python -m speechx_cli ...` is `speechx ...`; torchrun starts it as `torchrun ... -m speechx_cli train lm ...`."""

from .cli import main

main()
