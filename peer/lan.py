"""LAN discovery over mDNS/DNS-SD: a hosting peer announces its rendezvous, a joining peer finds it.

This module owns the multicast side (python-zeroconf's asyncio API); what is announced and what is
accepted are decided by the pure `peer.core.room.lan`. Two entry points:

- `announce(...)`: an async context manager that registers the `_msxsync._tcp.local.` service for
  as long as the block runs and says goodbye (unregisters) when it ends, however it ends;
- `discover(...)`: browses for a bounded time and returns the checked, deduplicated hosts. Whatever
  another machine announces is parsed by `peer.core.room.lan`; a malformed or hostile announcement is
  skipped with a log line.

`interfaces` restricts zeroconf to the given local addresses (tests pin it to a network namespace's
veth address); by default zeroconf uses every IPv4 interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator, Sequence

import ifaddr
from zeroconf import BadTypeInNameException, InterfaceChoice, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from peer.core.room.lan import (
    SERVICE_TYPE,
    Announcement,
    AnnouncementError,
    DiscoveredHost,
    check_addresses,
    check_port,
    deduplicate,
    instance_name,
    parse_announcement,
    txt_records,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 3.0  # seconds; mDNS responders answer within about one second
MAX_SERVICES = 64  # a browse resolves at most this many names, so a flood cannot run us out of memory


class LanError(RuntimeError):
    """LAN announcement or discovery cannot work here (no address to announce, bad arguments)."""


def local_addresses() -> list[str]:
    """This machine's addresses worth announcing: IPv4 other than loopback, and global IPv6.

    Link-local IPv6 is left out because a URL cannot carry the browser's interface scope."""
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            text = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            address = ipaddress.ip_address(text)
            if address.is_loopback or (address.version == 6 and address.is_link_local):
                continue
            found.append(str(address))
    return sorted(set(found), key=lambda text: (ipaddress.ip_address(text).version, text))


def _zeroconf(interfaces: Sequence[str] | None) -> AsyncZeroconf:
    choice: InterfaceChoice | list[str | int] = InterfaceChoice.All
    if interfaces is not None:
        try:
            choice = list(check_addresses(interfaces))
        except AnnouncementError as error:
            raise LanError(f"interfaces: {error}") from None
        if not choice:
            raise LanError("interfaces: the list is empty")
    try:
        return AsyncZeroconf(interfaces=choice)
    except (OSError, RuntimeError) as error:  # zeroconf's "No interfaces to listen on" is a RuntimeError
        raise LanError(f"cannot use multicast DNS on this network: {error}") from error


@contextlib.asynccontextmanager
async def announce(
    announcement: Announcement,
    *,
    port: int,
    addresses: Sequence[str] | None = None,
    interfaces: Sequence[str] | None = None,
) -> AsyncIterator[str]:
    """Announce a rendezvous at `addresses` (default: `interfaces` if given, else this machine's
    addresses) and `port` while the block runs; yields the registered instance name (zeroconf
    renames it, 'name (2)', if another host on the LAN already uses it)."""
    try:
        check_port(port)
        chosen = check_addresses(addresses if addresses is not None else interfaces or local_addresses())
    except AnnouncementError as error:
        raise LanError(str(error)) from None
    if not chosen:
        raise LanError("no network address to announce: is this machine on a network?")
    info = AsyncServiceInfo(
        SERVICE_TYPE,
        f"{instance_name(announcement)}.{SERVICE_TYPE}",
        port=port,
        properties=txt_records(announcement),
        server=f"msxsync-{announcement.key[:12]}.local.",
        parsed_addresses=chosen,
    )
    async with _zeroconf(interfaces) as aiozc:
        await (await aiozc.async_register_service(info, allow_name_change=True))
        log.info("announcing %s on the LAN at %s port %d", info.name, ", ".join(chosen), port)
        try:
            yield info.name
        finally:
            # Goodbye packets let browsers forget us at once instead of after the record's TTL.
            await (await aiozc.async_unregister_service(info))
            log.info("no longer announcing %s", info.name)


async def discover(
    game: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - how long to listen, not a deadline
    interfaces: Sequence[str] | None = None,
) -> list[DiscoveredHost]:
    """Listen for msxsync hosts for `timeout` seconds; return the valid ones (of `game` if given)."""
    if not 0 < timeout <= 60:
        raise LanError(f"discovery timeout {timeout} is not between 0 and 60 seconds")
    async with _zeroconf(interfaces) as aiozc:
        infos = await _browse(aiozc.zeroconf, timeout)
        hosts = [host for info in infos if (host := _host(aiozc.zeroconf, info)) is not None]
    return [host for host in deduplicate(hosts) if game is None or host.game == game]


async def _browse(zc: Zeroconf, listen: float) -> list[AsyncServiceInfo]:
    """Collect services for `listen` seconds, resolving each as it appears; return the resolved
    services still present at the end (a host that said goodbye meanwhile is left out)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + listen
    collector = _Collector()
    browser = AsyncServiceBrowser(zc, [SERVICE_TYPE], handlers=[collector.on_change])
    try:
        async with asyncio.TaskGroup() as group:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    while True:
                        info = collector.admit(await collector.arrivals.get())
                        if info is not None:
                            # Resolution ends by the deadline too, so the group does not outlive it.
                            group.create_task(_resolve(zc, info, max(0.0, deadline - loop.time())))
    finally:
        await browser.async_cancel()
    return collector.still_present()


class _Collector:
    """The names a browse has heard: which are still there, which are being resolved."""

    def __init__(self) -> None:
        self.arrivals: asyncio.Queue[str] = asyncio.Queue()
        self.present: dict[str, bool] = {}
        self.resolving: dict[str, AsyncServiceInfo] = {}
        self.flooded = False

    def on_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        """zeroconf's callback, run in the event loop: remember, and queue new names."""
        self.present[name] = state_change is not ServiceStateChange.Removed
        if state_change is ServiceStateChange.Added:
            self.arrivals.put_nowait(name)

    def admit(self, name: str) -> AsyncServiceInfo | None:
        """The service to resolve for a newly heard name, or None (known, too many, malformed)."""
        if name in self.resolving:
            return None
        if len(self.resolving) >= MAX_SERVICES:
            if not self.flooded:
                log.warning("more than %d LAN services; ignoring the rest", MAX_SERVICES)
            self.flooded = True
            return None
        info = _service_info(name)
        if info is not None:
            self.resolving[name] = info
        return info

    def still_present(self) -> list[AsyncServiceInfo]:
        return [info for name, info in self.resolving.items() if self.present.get(name)]


def _service_info(name: str) -> AsyncServiceInfo | None:
    try:
        return AsyncServiceInfo(SERVICE_TYPE, name)
    except BadTypeInNameException:
        log.warning("ignoring LAN service with a malformed name %s", _show(name))
        return None


async def _resolve(zc: Zeroconf, info: AsyncServiceInfo, wait: float) -> None:
    """Ask for the service's SRV, TXT and address records (answers land in zeroconf's cache),
    waiting at most `wait` seconds."""
    if not await info.async_request(zc, wait * 1000):
        log.info("LAN service %s did not answer in time", _show(info.name))


def _host(zc: Zeroconf, info: AsyncServiceInfo) -> DiscoveredHost | None:
    """The checked host behind a resolved service, from the freshest records in the cache."""
    if not info.load_from_cache(zc):
        return None  # incomplete (no SRV, TXT or address): nothing to join
    try:
        return parse_announcement(info.properties, info.parsed_addresses(), info.port)
    except AnnouncementError as error:
        log.warning("ignoring LAN announcement %s: %s", _show(info.name), error)
        return None


def _show(name: str, limit: int = 80) -> str:
    """An untrusted name for the log: escaped by repr, shortened."""
    text = repr(name)
    return text if len(text) <= limit else text[: limit - 3] + "..."
