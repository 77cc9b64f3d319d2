"""ExaBGP's API process (oca.bgp.exaconf): copies what ExaBGP writes to its stdin, unchanged, into the
FIFO named by its argument, until ExaBGP closes that stdin. It keeps its stdout open and silent:
ExaBGP reads commands from there, and takes a closed stdout for a dead process. (So `dd of=FIFO` and
`cat > FIFO` will not do: both put the FIFO on descriptor 1.) Standard library only, run as a file
with `python -I -S`, so it starts in milliseconds and needs no import path.
"""
import os
import sys


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: relay.py FIFO", file=sys.stderr)
        return 2
    out = os.open(argv[1], os.O_WRONLY)
    while True:
        data = os.read(0, 1 << 16)
        if not data:
            return 0
        view = memoryview(data)
        while view:
            view = view[os.write(out, view):]


if __name__ == "__main__":
    sys.exit(main(sys.argv))
