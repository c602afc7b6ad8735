"""How processes start: freed memory kept for the next CPU step, the garbage collector paused while
the stack is imported."""

from __future__ import annotations

import platform

import pytest

from tests.conftest import probe


def test_cpu_training_keeps_freed_memory_for_the_next_step(tmp_path):
    """glibc hands a freed 64 MB block back to the kernel at once (the next step's pages are
    zero-filled again); after `keep_freed_memory`, which CPU trials call, it stays for reuse."""
    code = (
        "import sys\n"
        "from sweep.runtime.startup import keep_freed_memory\n"
        "def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096\n"
        "applied = keep_freed_memory() if sys.argv[1] == 'keep' else None\n"
        "block = bytearray(64 << 20)\n"
        "held = rss()\n"
        "del block\n"
        "print(applied, (held - rss()) >> 20)\n"
    )
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's malloc only")
    given_back = {}
    for mode in ("default", "keep"):
        out = probe(code, tmp_path, mode)
        assert out.returncode == 0, out.stderr
        applied, given_back[mode] = out.stdout.split()
    assert applied == "True" and int(given_back["default"]) >= 60 and int(given_back["keep"]) <= 4, given_back


def test_start_up_pauses_the_garbage_collector_and_resumes_it_frozen():
    """`run`'s driver and the warm workers import the stack with the collector off
    (sweep/runtime/startup.py); it must come back on, or a sweep running for days never frees a
    cycle, and only if start-up turned it off (an embedding program's choice stands)."""
    import gc

    from sweep.runtime import startup

    frozen = gc.get_freeze_count()
    try:
        startup.pause()
        assert not gc.isenabled()
        startup.resume()
        assert gc.isenabled() and gc.get_freeze_count() > frozen
        startup.resume()  # nothing paused: nothing to do
        assert gc.isenabled()

        gc.disable()  # off before start-up: stays off
        startup.pause()
        startup.resume()
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()
