"""The wake-up signal across processes: a ring reaches a listener on the named socket, and
a ring with nobody listening is harmless."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

from gateway.notify import WAKEUP_SOCKET_ENV, Wakeup, stop_listening


async def test_a_ring_in_another_process_wakes_the_listener() -> None:
    name = f"paygate-test-{uuid.uuid4().hex}"
    wake = Wakeup()
    sock = wake.listen(name)
    try:
        assert not await wake.wait(0.05)
        ring = "from gateway.notify import Wakeup; Wakeup.from_env().ring()"
        env = dict(os.environ, **{WAKEUP_SOCKET_ENV: name})
        subprocess.run([sys.executable, "-c", ring], env=env, check=True)
        assert await wake.wait(5.0)
        assert not await wake.wait(0.05)  # several datagrams would still be one ring
    finally:
        stop_listening(sock)


async def test_a_ring_with_nobody_listening_only_sets_the_local_event() -> None:
    wake = Wakeup(f"paygate-test-{uuid.uuid4().hex}")
    wake.ring()
    assert await wake.wait(0.05)
    wake.close()
