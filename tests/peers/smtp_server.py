"""A real SMTP server for the end-to-end tests (aiosmtpd), on loopback.

Every message it takes is written, as received, into DIR as `<n>.eml`
(written under a temporary name first, then renamed, so that a reader never
sees half a message). While a file named `hold` exists in DIR, the server
writes the message and then waits before it answers `250`: a test can kill
the sender between "sent" and "recorded". A recipient whose address starts
with `refused` is refused for good (550, quoting the address, as real
servers do).
"""

import argparse
import asyncio
import itertools
import os
import pathlib
import signal
import sys
import time

from aiosmtpd.controller import Controller


class Recorder:
    def __init__(self, folder: pathlib.Path):
        self.folder = folder
        self.numbers = itertools.count(1)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("refused"):
            return f"550 5.1.1 <{address}>: no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        name = f"{time.time_ns()}-{os.getpid()}-{next(self.numbers)}"
        partial = self.folder / f".{name}.partial"
        partial.write_bytes(envelope.original_content or envelope.content)
        partial.rename(self.folder / f"{name}.eml")
        while (self.folder / "hold").exists():
            await asyncio.sleep(0.02)
        return "250 OK"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=pathlib.Path, required=True)
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    controller = Controller(Recorder(args.dir), hostname="127.0.0.1", port=args.port)
    controller.start()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    controller.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
