"""A practice served from a background thread, shared by a test module."""

from __future__ import annotations

import pytest
import winrm

from osiris_lab import Lab, Quotas


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(3, workdir=tmp_path_factory.mktemp("lab"), quotas=Quotas(max_shells_per_user=4, idle_timeout_ms=60000))
    with lab.running(control=True):
        yield lab


@pytest.fixture(autouse=True)
def _reset(request):
    yield
    if "lab" in request.fixturenames:
        request.getfixturevalue("lab").reset()


class Clients:
    """pywinrm sessions against the lab's hosts."""

    def __init__(self, lab: Lab):
        self.lab = lab

    def https(self, host: str = "ws01", password: str | None = None, **kw) -> winrm.Session:
        kw.setdefault("ca_trust_path", str(self.lab.ca_file))
        return winrm.Session(self.lab.host(host).endpoint("https"), auth=(self.user, password or self.lab.password),
                             transport="ssl", **kw)

    def ntlm(self, host: str = "ws01", scheme: str = "http", **kw) -> winrm.Session:
        kw.setdefault("message_encryption", "always" if scheme == "http" else "auto")
        kw.setdefault("ca_trust_path", str(self.lab.ca_file) if scheme == "https" else None)
        return winrm.Session(self.lab.host(host).endpoint(scheme), auth=(self.user, self.lab.password),
                             transport="ntlm", **kw)

    @property
    def user(self) -> str:
        return f"{self.lab.domain}\\{self.lab.username}"


@pytest.fixture
def clients(lab):
    return Clients(lab)
