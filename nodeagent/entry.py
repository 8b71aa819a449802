"""The console scripts of the mse-node-agent distribution ([project.scripts]).

Each one is ``python -m nodeagent COMMAND``, so the two spellings cannot drift apart:

* ``mse-agent serve|farm|witness``: run a node, every node of a fleet file, or a witness;
* ``mse-setup``: the set-up wizard, as the seed's ``setup.sh``;
* ``gethainfo`` and ``getserverinfo``: print what the appliance prints.
"""

from __future__ import annotations

import sys

from . import cli
from .errors import EXIT_USAGE

AGENT_COMMANDS = ("serve", "farm", "witness")


def mse_agent(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in AGENT_COMMANDS:
        return cli.main(args, prog=f"mse-agent {args[0]}")
    p = cli.Parser(
        prog="mse-agent",
        description="MSE Health Monitor (node agent). `mse-agent COMMAND --help` lists a command's flags.",
    )
    p.add_argument(
        "command",
        choices=AGENT_COMMANDS,
        help="serve: run one node; farm: every node of a fleet file in one process; witness: an arbiter for HA pairs",
    )
    p.parse_args(args)  # prints the help (exit 0) or says what is wrong (exit 2)
    return EXIT_USAGE  # not reached: a valid command was handled above


def mse_setup() -> int:
    return cli.main(["setup", *sys.argv[1:]], prog="mse-setup")


def gethainfo() -> int:
    return cli.main(["gethainfo", *sys.argv[1:]], prog="gethainfo")


def getserverinfo() -> int:
    return cli.main(["getserverinfo", *sys.argv[1:]], prog="getserverinfo")
