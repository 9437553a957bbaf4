"""What an idle chat costs: CPU time of the chat process while nobody types.

The chat runs headless (Textual's run_test) on a data folder with ``--pairs`` training pairs
and one short chat; once the model is loaded and the first frame drawn, the process's CPU time
(user + system, every thread) is read over ``--seconds`` of wall time. Prints the share of one
core used. ``--reread``: the chat re-reads the store on every look, as it did before it followed
the store's change stamp (tunechat.core.store.Store.change_stamp), for comparison.

    python bench/idle.py [--pairs 2000] [--seconds 20] [--reread]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cpu_seconds() -> float:
    """User + system time of this process so far, all threads."""
    t = os.times()
    return t.user + t.system


async def measure(pairs: int, seconds: float, reread: bool = False) -> float:
    from tunechat.core.engine import GenerationSettings
    from tunechat.core.store import Store
    from tunechat.tui.app import TunechatApp

    store = Store()
    store.add_pairs([(f"What is fact number {i}?", f"Fact {i} is {i * 7}.") for i in range(pairs)])
    chat = store.create_chat("idle")
    store.add_message(chat.id, "user", "Hello")
    store.add_message(chat.id, "assistant", "Hello! How can I help?")
    if reread:
        looks = itertools.count()
        store.change_stamp = lambda: (-1, next(looks))  # type: ignore[method-assign]  # never the same
    app = TunechatApp(store=store, settings=GenerationSettings(temperature=0.0, max_tokens=8))
    async with app.run_test(size=(120, 40)) as pilot:
        deadline = time.monotonic() + 120
        while app.engine is None or app.status.activity != "ready":
            if time.monotonic() > deadline:
                raise SystemExit("the model did not load within 120 s")
            await pilot.pause(0.1)
        await pilot.pause(2.0)  # the first frames and the load's aftermath
        start_cpu, start = cpu_seconds(), time.monotonic()
        await asyncio.sleep(seconds)
        used, wall = cpu_seconds() - start_cpu, time.monotonic() - start
    store.close()
    return used / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--reread", action="store_true", help="re-read the store on every look (as before)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["TUNECHAT_HOME"] = home
        share = asyncio.run(measure(args.pairs, args.seconds, args.reread))
    how = "re-reading the store every look" if args.reread else "reading the store only after a change"
    print(f"idle chat, {args.pairs} pairs, {args.seconds:.0f} s, {how}: {share:.2%} of one core")


if __name__ == "__main__":
    main()
