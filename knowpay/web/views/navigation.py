"""Where the pages' menus come from: a registry of links per area, so a later area (analytics,
support, risk) adds its pages with one call and no template edit.

    from knowpay.web.views.navigation import NavLink, navigation
    navigation(app).add("admin", NavLink("analytics_pages.dashboard", lazy_gettext("Analytics"), roles=("admin",)))

Areas: "main" (the header), "buyer", "creator" and "admin" (each centre's tabs). A link shows only
to a user holding one of its `roles` (any signed-in user when empty; everyone when `public`), and
only when its endpoint exists, so a page that is not built yet is never linked.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from flask import Flask, current_app


@dataclass(frozen=True)
class NavLink:
    endpoint: str
    label: object  # a lazy_gettext string, translated when rendered
    roles: tuple[str, ...] = ()
    public: bool = False
    # Other endpoints under this link (a detail page highlights its list's tab); "buyer.*" is a whole area.
    also: tuple[str, ...] = field(default_factory=tuple)

    def visible_to(self, user: object | None) -> bool:
        if self.public:
            return True
        if user is None or not getattr(user, "is_authenticated", False):
            return False
        return not self.roles or user.has_any_role(*self.roles)

    def is_current(self, endpoint: str | None) -> bool:
        if endpoint is None:
            return False
        return endpoint == self.endpoint or any(
            endpoint == other or (other.endswith(".*") and endpoint.startswith(other[:-1])) for other in self.also)


class Navigation:
    """Links per area, in the order they were added."""

    def __init__(self) -> None:
        self._areas: dict[str, list[NavLink]] = {}

    def add(self, area: str, link: NavLink) -> None:
        self._areas.setdefault(area, []).append(link)

    def extend(self, area: str, links: Iterable[NavLink]) -> None:
        for link in links:
            self.add(area, link)

    def links(self, area: str, user: object | None, endpoints: Iterable[str]) -> list[NavLink]:
        known = set(endpoints)
        return [link for link in self._areas.get(area, ()) if link.endpoint in known and link.visible_to(user)]


def navigation(app: Flask | None = None) -> Navigation:
    """The app's registry (created by register_views)."""
    return (app or current_app).extensions["knowpay_nav"]
