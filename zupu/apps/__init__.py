"""User-facing programs over models, one module per `zupu` sub-command.

Every module here that defines `add_parser(subparsers)` adds its commands to `zupu` (see `zupu.cli`),
so a new program needs no list edited anywhere. Such a module imports only light modules at its top and
torch inside its command function, so that `zupu --help` and the other commands do not pay for torch.
"""
