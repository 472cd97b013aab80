"""python -m sslzoo.embed {embed,neighbors} ...: see sslzoo.embed.cli."""

import sys

from sslzoo.embed.cli import embed_main, neighbors_main

COMMANDS = {"embed": embed_main, "neighbors": neighbors_main}
USAGE = ("usage: python -m sslzoo.embed {embed,neighbors} ... (python -m sslzoo.embed embed --help, "
         "python -m sslzoo.embed neighbors --help)")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"python -m sslzoo.embed: error: unknown command '{argv[0]}'; {USAGE}", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
