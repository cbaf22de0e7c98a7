"""Everything the status loop needs, built from the settings, for the daemon to wire:
the MPPS service (for the worklist SCP's AE), the outbox sender and housekeeping.

    pipeline = StatusPipeline.build(settings, store, submit=commits.submit)
    scp = WorklistSCP(..., extra_services=pipeline.dicom_services)
    await pipeline.start()   # on the daemon's loop
    ...
    await pipeline.stop()    # before the commit queue stops

Raises MappingLoadError (file, line, key of every problem) for a broken
profile or a destination whose profile or character set does not resolve, and
bridge.tls.TlsConfigError for a destination's unreadable TLS file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bridge.config import Settings
from bridge.hl7.charset import CharsetError, codec_for
from bridge.mapping.errors import MappingLoadError
from bridge.mpps.housekeeping import Housekeeping
from bridge.mpps.service import MppsService
from bridge.outbound.events import Destination, StatusMessages
from bridge.outbound.loader import ProfileSet, load_profiles
from bridge.outbound.sender import OutboxSender, Submit
from bridge.store.base import Store
from bridge.yamlsrc import SourceError


def resolve_destinations(settings: Settings, profiles: ProfileSet | None) -> list[Destination]:
    """Each enabled destination with its profile and codec; MappingLoadError otherwise."""
    errors: list[SourceError] = []
    out: list[Destination] = []
    for i, d in enumerate(settings.outbound.destinations):
        if not d.enabled:
            continue
        key = f"outbound.destinations[{i}]"
        profile = None
        if profiles is not None:
            profile = profiles.get(d.profile) if d.profile else \
                profiles.for_message_type(d.message_type)
        if profile is None:
            wanted = f"profile {d.profile!r}" if d.profile else f"a {d.message_type} profile"
            errors.append(SourceError("<config>", None, key,
                                      f"no outbound profile: {wanted} is not in "
                                      + ", ".join(map(str, settings.outbound.profiles))))
            continue
        if profile.event_type != d.message_type:
            errors.append(SourceError("<config>", None, f"{key}.profile",
                                      f"profile {profile.name} builds {profile.event_type}, "
                                      f"but message_type is {d.message_type}"))
            continue
        try:
            codec = codec_for(d.charset, default="ascii", aliases={})
        except CharsetError as exc:
            errors.append(SourceError("<config>", None, f"{key}.charset", str(exc)))
            continue
        out.append(Destination(d.name, profile, d.charset, codec, d.receiving_application,
                               d.receiving_facility, frozenset(d.events)))
    if errors:
        raise MappingLoadError(errors)
    return out


@dataclass
class StatusPipeline:
    mpps: MppsService | None
    sender: OutboxSender
    housekeeping: Housekeeping
    profiles: ProfileSet | None

    @classmethod
    def build(cls, settings: Settings, store: Store, *, submit: Submit) -> StatusPipeline:
        enabled = [d for d in settings.outbound.destinations if d.enabled]
        profiles = load_profiles(settings.outbound.profiles) if enabled else None
        destinations = resolve_destinations(settings, profiles)
        messages = StatusMessages(
            destinations, sending_application=settings.outbound.sending_application,
            sending_facility=settings.outbound.sending_facility,
            processing_id=settings.outbound.processing_id) if destinations else None
        # The whole list: the sender skips disabled ones, and names each by position.
        sender = OutboxSender(store, settings.outbound.destinations, submit=submit,
                              poll_interval_s=settings.outbound.poll_interval_s)
        mpps = MppsService(store, settings.mpps, messages=messages, notify=sender.wake) \
            if settings.mpps.enabled else None
        housekeeping = Housekeeping(settings.housekeeping, submit, messages=messages,
                                    notify=sender.wake)
        return cls(mpps, sender, housekeeping, profiles)

    @property
    def dicom_services(self) -> tuple[MppsService, ...]:
        return (self.mpps,) if self.mpps is not None else ()

    async def start(self) -> None:
        await self.sender.start()
        self.housekeeping.start()

    async def stop(self) -> None:
        await self.housekeeping.stop()
        await self.sender.stop()


def profile_names(pipeline: StatusPipeline) -> Sequence[str]:
    return pipeline.profiles.names if pipeline.profiles is not None else ()
