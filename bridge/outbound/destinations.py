"""The configured outbound destinations, resolved: each with its profile and codec,
and the ``StatusMessages`` that builds their rows (the application layer hands
it to every source of status changes as their ``bridge.steps.Reporter``).
"""

from __future__ import annotations

from bridge.hl7.charset import CharsetError, codec_for
from bridge.mapping.errors import MappingLoadError
from bridge.outbound.events import Destination, StatusMessages
from bridge.outbound.loader import ProfileSet, load_profiles
from bridge.outbound.settings import OutboundSettings
from bridge.yamlsrc import SourceError


def resolve_destinations(settings: OutboundSettings, profiles: ProfileSet | None
                         ) -> list[Destination]:
    """Each enabled destination with its profile and codec; MappingLoadError otherwise."""
    errors: list[SourceError] = []
    out: list[Destination] = []
    for i, d in enumerate(settings.destinations):
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
                                      + ", ".join(map(str, settings.profiles))))
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


def status_messages(settings: OutboundSettings) -> StatusMessages | None:
    """The ``bridge.steps.Reporter`` for the enabled destinations; None when there are none.

    Raises MappingLoadError (file, line, key of every problem) for a broken
    profile or a destination whose profile or character set does not resolve.
    """
    enabled = [d for d in settings.destinations if d.enabled]
    profiles = load_profiles(settings.profiles) if enabled else None
    destinations = resolve_destinations(settings, profiles)
    if not destinations:
        return None
    return StatusMessages(destinations, sending_application=settings.sending_application,
                          sending_facility=settings.sending_facility,
                          processing_id=settings.processing_id)
