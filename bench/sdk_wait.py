"""The baseline of bench/scale.py part B: N tasks followed the official SDK's way, in their own process.

    python bench/sdk_wait.py URL N [--timeout S]

One thread per task: the official ``runwayml`` client creates a 4-second veo3.1 text_to_video clip, then
``wait_for_task_output()`` polls it at the SDK's default interval (``POLL_TIME`` 6 s ± 1.5 s, Runway's pace).
Outputs are not downloaded: the figure wanted is what waiting costs. The process prints one line when every
create has been answered (``created``) and one when the first wait returns (``first-done``), so the caller
can read this process's CPU between the two, exactly as it does for the daemon; then it waits for the rest
and prints ``done OK FAILED``.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

import runwayml

KEY = "key_" + "0" * 128


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("n", type=int)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    lock = threading.Lock()
    created = threading.Barrier(args.n + 1)
    first_done = threading.Event()
    failed: list[str] = []
    threading.stack_size(256 * 1024)  # a thousand threads: the default 8 MiB stacks are only address space

    with runwayml.RunwayML(base_url=args.url, api_key=KEY, max_retries=5) as client:

        def one(i: int) -> None:
            task = None
            try:
                task = client.text_to_video.create(
                    model="veo3.1", prompt_text=f"scene {i}", ratio="1280:720", duration=4
                )
            except Exception as exc:  # noqa: BLE001 - counted and shown
                with lock:
                    failed.append(f"create {i}: {exc!r}")
            created.wait()
            if task is None:
                return
            try:
                task.wait_for_task_output(timeout=args.timeout)
            except Exception as exc:  # noqa: BLE001 - counted and shown
                with lock:
                    failed.append(f"wait {i}: {exc!r}")
            first_done.set()

        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(args.n)]
        for thread in threads:
            thread.start()
        created.wait()
        print("created", flush=True)
        first_done.wait(args.timeout)
        print("first-done", flush=True)
        deadline = time.monotonic() + args.timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
    print(f"done {args.n - len(failed)} {len(failed)}", flush=True)
    for line in failed[:5]:
        print(line, file=sys.stderr)
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
