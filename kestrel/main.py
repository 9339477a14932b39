"""Entry point: ``kestrel`` / ``python -m kestrel [stage2]``; in the guest, /init runs
``python3 -I -S -c "...from kestrel.main import main..."`` (see pid1.PYTHON_ARGV).

As PID 1: mounts, modules, maybe switch_root (stage 1), then network, then the
agent; when the agent stops (SIGTERM or POST /v1/system/shutdown) the VM is powered
off. PID 1 never exits -- that would panic the kernel.
Elsewhere (tests, a developer host) the same agent runs without the PID-1 duties.

Everything up to the listening API imports only what the interpreter already has
plus ctypes: under TCG the first run of any code is what boot time is made of.
"""

from __future__ import annotations

import os
import sys
import time

from kestrel.config import ConfigError, load_config
from kestrel.console import Timeline, echo, init_start_from_kmsg, uptime

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kestrel.config import AgentConfig


def configure_network(config: AgentConfig) -> str | None:
    """Apply the kernel ``ip=`` parameter (the kernel has no IP autoconfig).

    Returns the interface that still needs DHCP (the agent runs udhcpc for it)."""
    from kestrel.ipconfig import IpConfigError, parse_ip_param
    from kestrel.netconfig import (
        NetConfigError,
        configure_interface,
        set_hostname,
        wait_for_interface,
        write_resolv_conf,
    )

    raw = config.cmdline.get("ip")
    if raw is None:
        return None
    try:
        ip = parse_ip_param(raw)
    except IpConfigError as exc:
        echo(f"kestrel: {exc}; network left unconfigured")
        return None
    if ip.hostname:
        try:
            set_hostname(ip.hostname)
        except OSError as exc:
            echo(f"kestrel: sethostname {ip.hostname}: {exc}")
    if not wait_for_interface(config.sys, ip.device, 3.0):
        echo(f"kestrel: interface {ip.device} did not appear")
        return None
    try:
        configure_interface(ip)
    except NetConfigError as exc:
        echo(f"kestrel: network: {exc}")
        return None
    write_resolv_conf(ip.dns)
    if ip.dhcp:
        return ip.device
    if ip.client_ip:
        gateway = f" via {ip.gateway}" if ip.gateway else ""
        echo(f"kestrel: {ip.device} {ip.client_ip}/{ip.prefix_len}{gateway}")
    return None


def set_clock_from_cmdline(config: AgentConfig) -> None:
    """``volant.clock=<unix seconds>``: the microVM has no RTC, so the wall clock starts
    at 1970 and every log timestamp would be wrong. The host passes its time at launch;
    the guest adds its uptime (the time since that value was taken, near enough)."""
    raw = config.cmdline.get("volant.clock")
    if not raw:
        return
    try:
        host_time = float(raw)
    except ValueError:
        echo(f"kestrel: volant.clock={raw!r} is not a number")
        return
    target = host_time + (uptime(config.proc) or 0.0)
    if time.time() >= target - 60:
        return  # the clock is already sane
    try:
        time.clock_settime(time.CLOCK_REALTIME, target)
    except OSError as exc:
        echo(f"kestrel: setting the clock failed: {exc}")


def _halt_forever() -> None:
    while True:
        time.sleep(3600)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        config = load_config(argv=args)
    except ConfigError as exc:
        echo(f"kestrel: {exc}")
        return 2
    # When the interpreter had started and imported us (before mounts and modules), so
    # the timeline separates Python's start from PID 1's own setup work.
    python_up = uptime(config.proc)
    late_modules: list[str] = []
    if config.pid1:
        from kestrel.pid1 import stage1

        late_modules = stage1(config)  # may exec switch_root and never return
    timeline = Timeline(config.proc)
    if config.pid1:
        timeline.mark("init", init_start_from_kmsg(os.path.join(config.dev, "kmsg")))
        if python_up is not None:
            timeline.mark("python", python_up)
        set_clock_from_cmdline(config)
    timeline.mark("kestrel")
    echo(f"kestrel: starting (pid {os.getpid()}, {'stage 2' if config.stage2 else 'stage 1'})")
    if config.subreaper and not config.pid1:
        from kestrel.syscalls import set_child_subreaper

        set_child_subreaper()
    dhcp_device = None
    if config.pid1:
        dhcp_device = configure_network(config)
        timeline.mark("network")

    from kestrel.agent import Agent

    agent = Agent(config, timeline, dhcp_device=dhcp_device, late_modules=late_modules)
    try:
        agent.run()
    except KeyboardInterrupt:
        pass
    except Exception:
        import traceback

        echo("kestrel: agent failed:\n" + traceback.format_exc())
        if not config.pid1:
            return 1
    if config.pid1:
        from kestrel.pid1 import sync_unmount_power_off

        sync_unmount_power_off()
        _halt_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
