"""The supervision tree in one process: a crash of the VM manager must not take VMs down.

Found by the chaos harness: after the manager restarted (root is rest_for_one, so the VM
supervisor before it kept running), it tried to start VM actors that still existed, crashed
again, and the root gave up — volantd exited. Now the restarted manager takes the running
actors over.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import trio

from tests.daemon_process import free_port
from tests.vmtools import pid_alive, write_plugin
from volant.config import load_config
from volant.orchestrator.root import Tree
from volant.runtime import find_marked_processes, instance_id_for


async def test_a_crashed_vm_manager_takes_over_the_running_vms(tmp_path: Path) -> None:
    port = free_port()
    cfg = load_config(environ={
        "VOLANT_STATE_DIR": str(tmp_path / "state"), "VOLANT_RUNTIME_DIR": str(tmp_path / "r"),
        "VOLANT_API_LISTEN": f"127.0.0.1:{port}", "VOLANT_HYPERVISOR": "hollow",
        "VOLANT_MANAGE_NETWORK": "false"})
    tree = Tree(cfg)
    root = tree.build()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(root.run)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
                assert (await c.post("/api/v1/plugins",
                                     json=write_plugin(tmp_path))).status_code == 201
                created = await c.post("/api/v1/vms", params={"wait": "running"},
                                       json={"name": "keep", "plugin": "demo"})
                assert created.status_code == 201, created.text
                pid = created.json()["pid"]
                old_manager = tree.vm_manager
                root.ref("vm-manager").cast(object())  # an unknown message crashes it
                with trio.fail_after(20):
                    while tree.vm_manager is old_manager:
                        await trio.sleep(0.05)
                with trio.fail_after(20):
                    while True:
                        try:
                            answer = await c.get("/api/v1/vms/keep")
                            if answer.status_code == 200:
                                break
                        except httpx.HTTPError:
                            pass  # the API restarts after the manager (rest_for_one)
                        await trio.sleep(0.05)
                view = answer.json()
                assert view["status"] == "running" and view["pid"] == pid
                assert pid_alive(pid)
                # ... and the new manager really manages it.
                stopped = await c.post("/api/v1/vms/keep/stop")
                assert stopped.status_code == 200 and not pid_alive(pid)
            tree.lifecycle.detaching = True
            root.request_stop()
    finally:
        for proc in find_marked_processes(instance_id_for(tmp_path / "state")):
            os.kill(proc.pid, signal.SIGKILL)
